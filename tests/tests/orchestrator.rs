//! The local orchestrator runs the orchestrator conformance suite, on
//! in-memory stores and on the file-backed local stack, at several
//! parallelisms.

use std::sync::{Arc, Mutex};
use zenflow::stacks::{LocalOrchestrator, ObjectArtifactStore, SqliteMetadataStore};
use zenflow::Stack;

fn memory_stack(parallelism: usize) -> Stack {
    Stack::new(
        "conformance",
        Arc::new(LocalOrchestrator::new(parallelism)),
        Arc::new(ObjectArtifactStore::memory()),
        Arc::new(SqliteMetadataStore::in_memory().unwrap()),
    )
}

#[test]
fn local_orchestrator_conforms_with_one_worker() {
    zenflow::orchestrator_conformance::run_all(|| memory_stack(1));
}

#[test]
fn local_orchestrator_conforms_with_four_workers() {
    zenflow::orchestrator_conformance::run_all(|| memory_stack(4));
}

#[test]
fn local_orchestrator_conforms_on_the_local_stack() {
    let dirs = Mutex::new(Vec::new());
    zenflow::orchestrator_conformance::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let stack = zenflow::local_stack_at(dir.path()).unwrap().with_inline_limit(0);
        dirs.lock().unwrap().push(dir);
        stack
    });
}
