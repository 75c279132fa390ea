//! Outputs reach the steps of the same run from memory: no re-reading of the
//! store, and the value itself (not a decoded copy) when its materializer is
//! exact. A `Vec<u8>`'s capacity tells which one a step received: a decoded
//! vector is exactly as long as its bytes.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use zenflow::prelude::*;

const MARK: usize = 1 << 20;

/// `n` bytes in a vector with room for [`MARK`] bytes.
#[step]
fn spacious(#[param] n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(MARK);
    v.extend((0..n).map(|i| (i % 251) as u8));
    v
}

static SINGLE: Mutex<Vec<(usize, Vec<u8>)>> = Mutex::new(Vec::new());
static PAIR: Mutex<Vec<(usize, Vec<u8>)>> = Mutex::new(Vec::new());
static RETRIED: Mutex<Vec<(usize, Vec<u8>)>> = Mutex::new(Vec::new());

#[step]
fn only_reader(data: Vec<u8>) -> u64 {
    SINGLE.lock().unwrap().push((data.capacity(), data.clone()));
    data.len() as u64
}

#[step]
fn left(data: Vec<u8>) -> u64 {
    PAIR.lock().unwrap().push((data.capacity(), data.clone()));
    1
}

#[step]
fn right(data: Vec<u8>) -> u64 {
    PAIR.lock().unwrap().push((data.capacity(), data.clone()));
    2
}

#[step(retries = 1, retry_backoff = "1ms")]
fn fails_once(data: Vec<u8>, ctx: &StepContext) -> Result<u64, String> {
    RETRIED.lock().unwrap().push((data.capacity(), data.clone()));
    if ctx.attempt() == 1 {
        return Err("first attempt fails".into());
    }
    Ok(data.len() as u64)
}

#[pipeline]
fn single(n: &usize) {
    let d = spacious(*n);
    only_reader(d);
}

#[pipeline]
fn pair() {
    let d = spacious(50_000);
    left(d);
    right(d);
}

#[pipeline]
fn retried() {
    let d = spacious(20_000);
    fails_once(d);
}

fn stack() -> (tempfile::TempDir, zenflow::Stack) {
    let dir = tempfile::tempdir().unwrap();
    let stack = zenflow::local_stack_at(dir.path()).unwrap();
    (dir, stack)
}

fn expected(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn a_single_reader_gets_the_value_itself_and_the_artifact_is_still_stored() {
    let (_dir, stack) = stack();
    // Inline in the record (small) and in the artifact store (large).
    for n in [100, 100_000] {
        SINGLE.lock().unwrap().clear();
        let run = single.run(&stack, &n).unwrap();
        let seen = SINGLE.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].0 >= MARK, "the reader got a copy (capacity {}), not the value", seen[0].0);
        assert_eq!(seen[0].1, expected(n));
        // What was stored is the same bytes, read back and verified.
        let stored: Vec<u8> = run.output("spacious", "output").unwrap();
        assert_eq!(stored, expected(n));
    }
}

#[test]
fn of_several_readers_one_gets_the_value_and_the_others_equal_copies() {
    let (_dir, stack) = stack();
    pair.run(&stack, &()).unwrap();
    let seen = PAIR.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen.iter().filter(|(cap, _)| *cap >= MARK).count(),
        1,
        "{:?}",
        seen.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    assert!(seen.iter().all(|(_, data)| *data == expected(50_000)));
}

#[test]
fn a_retry_decodes_what_the_failed_attempt_consumed() {
    let (_dir, stack) = stack();
    let run = retried.run(&stack, &()).unwrap();
    assert_eq!(run.step("fails_once").unwrap().attempts, 2);
    let seen = RETRIED.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].0 >= MARK, "the first attempt gets the value");
    assert_eq!(seen[1].0, seen[1].1.len(), "the retry gets a decoded copy");
    assert_eq!(seen[0].1, seen[1].1);
}

/// A type whose encoding drops a field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, zenflow::Artifact)]
struct Lossy {
    kept: u32,
    #[serde(skip)]
    dropped: u32,
}

static LOSSY: Mutex<Vec<Lossy>> = Mutex::new(Vec::new());

#[step]
fn make_lossy() -> Lossy {
    Lossy { kept: 7, dropped: 42 }
}

#[step]
fn read_lossy(value: Lossy) -> u32 {
    LOSSY.lock().unwrap().push(value.clone());
    value.kept
}

#[pipeline]
fn lossy() {
    let v = make_lossy();
    read_lossy(v);
}

#[test]
fn values_of_inexact_materializers_are_decoded_as_a_cached_run_would_see_them() {
    let (_dir, stack) = stack();
    lossy.run(&stack, &()).unwrap();
    assert_eq!(LOSSY.lock().unwrap().clone(), vec![Lossy { kept: 7, dropped: 0 }]);
}
