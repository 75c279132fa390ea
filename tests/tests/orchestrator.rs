//! The local orchestrator runs the orchestrator conformance suite, on
//! in-memory stores and on the file-backed local stack, at several
//! parallelisms.

use std::sync::Mutex;

#[test]
fn local_orchestrator_conforms_with_one_worker() {
    zenflow::conformance::orchestrator::run_all(|| zenflow::memory_stack(1).unwrap());
}

#[test]
fn local_orchestrator_conforms_with_four_workers() {
    zenflow::conformance::orchestrator::run_all(|| zenflow::memory_stack(4).unwrap());
}

#[test]
fn local_orchestrator_conforms_on_the_local_stack() {
    let stacks = Mutex::new(Vec::new());
    zenflow::conformance::orchestrator::run_all(|| {
        let stack = zenflow::testing::TestStack::new().map(|s| s.with_inline_limit(0));
        let handle = stack.stack().clone();
        stacks.lock().unwrap().push(stack);
        handle
    });
}
