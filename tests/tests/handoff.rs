//! Outputs reach the steps of the same run from memory: no re-reading of the
//! store, and the value itself (not a decoded copy) when its materializer is
//! exact. A `Vec<u8>`'s capacity tells which one a step received: a decoded
//! vector is exactly as long as its bytes.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use zenflow::prelude::*;
use zenflow::testing::TestStack;

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

fn expected(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn a_single_reader_gets_the_value_itself_and_the_artifact_is_still_stored() {
    let stack = TestStack::new();
    // Inline in the record (small) and in the artifact store (large).
    for n in [100, 100_000] {
        SINGLE.lock().unwrap().clear();
        let run = single.run(&stack, &n).unwrap();
        let seen = SINGLE.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].0 >= MARK, "the reader got a copy (capacity {}), not the value", seen[0].0);
        assert_eq!(seen[0].1, expected(n));
        // What was stored is the same bytes, read back and verified.
        let stored: Vec<u8> = run.artifact("spacious", "output").unwrap();
        assert_eq!(stored, expected(n));
    }
}

#[test]
fn of_several_readers_one_gets_the_value_and_the_others_equal_copies() {
    let stack = TestStack::new();
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
    let stack = TestStack::new();
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
    let stack = TestStack::new();
    lossy.run(&stack, &()).unwrap();
    assert_eq!(LOSSY.lock().unwrap().clone(), vec![Lossy { kept: 7, dropped: 0 }]);
}

// Large arrays are streamed: hashed and written to the store straight from
// the value, never encoded into a buffer; the value itself moves on.

const BIG: usize = 3 << 20; // 12 MiB of f32, above the 8 MiB streaming threshold

/// The two streamed tests share the statics below: one at a time.
static STREAMED: Mutex<()> = Mutex::new(());
static MADE_AT: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static READ: Mutex<Vec<(usize, f64)>> = Mutex::new(Vec::new());

#[step]
fn big_array(#[param] n: usize) -> ndarray::Array1<f32> {
    let a = ndarray::Array1::from_shape_fn(n, |i| (i % 1000) as f32);
    MADE_AT.lock().unwrap().push(a.as_ptr() as usize);
    a
}

#[step(retries = 1, retry_backoff = "1ms")]
fn sum_array(a: ndarray::Array1<f32>, ctx: &StepContext) -> Result<f64, String> {
    let sum: f64 = a.iter().map(|&x| f64::from(x)).sum();
    READ.lock().unwrap().push((a.as_ptr() as usize, sum));
    if ctx.attempt() == 1 && a.len() == BIG + 1 {
        return Err("first attempt fails".into());
    }
    Ok(sum)
}

#[pipeline]
fn streamed(n: &usize) {
    let a = big_array(*n);
    sum_array(a);
    sum_array(a);
}

fn expected_sum(n: usize) -> f64 {
    (0..n).map(|i| (i % 1000) as f64).sum()
}

#[test]
fn large_arrays_are_stored_from_the_value_and_the_value_moves_on() {
    let _one_at_a_time = STREAMED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let stack = TestStack::new();
    MADE_AT.lock().unwrap().clear();
    READ.lock().unwrap().clear();
    // Two readers: one takes the value itself, the other reads the store
    // (a streamed encoding is nowhere else).
    let run = streamed.run(&stack, &BIG).unwrap();
    let made = MADE_AT.lock().unwrap().clone();
    let read = READ.lock().unwrap().clone();
    assert_eq!(read.len(), 2);
    assert_eq!(read.iter().filter(|(at, _)| *at == made[0]).count(), 1, "exactly one reader got the array itself");
    assert!(read.iter().all(|(_, sum)| *sum == expected_sum(BIG)));
    let version = run.output_version("big_array", "output").unwrap();
    assert_eq!(version.metadata.size, (BIG * 4 + 128) as u64, "the size of the .npy file is recorded");
    assert_eq!(version.metadata.shape, Some(vec![BIG]));
    assert!(!version.uri.starts_with("inline:"));
    let stored: ndarray::Array1<f32> = run.artifact("big_array", "output").unwrap();
    assert_eq!(stored.len(), BIG);
    assert_eq!(stored.iter().map(|&x| f64::from(x)).sum::<f64>(), expected_sum(BIG));
}

#[test]
fn a_retry_of_a_streamed_input_reads_it_from_the_store() {
    let _one_at_a_time = STREAMED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    READ.lock().unwrap().clear();
    let stack = TestStack::new();
    let n = BIG + 1;
    let run = streamed.run(&stack, &n).unwrap();
    assert!(run.steps().iter().filter(|s| s.invocation.starts_with("sum_array")).all(|s| s.attempts == 2));
    let read = READ.lock().unwrap().clone();
    let sums: Vec<f64> = read.iter().filter(|(_, s)| *s == expected_sum(n)).map(|r| r.1).collect();
    assert_eq!(sums.len(), 4, "two readers, two attempts each, all saw the same values: {read:?}");
}

#[step]
fn sum_all(parts: Vec<ndarray::Array1<f32>>) -> f64 {
    parts.iter().flat_map(|a| a.iter()).map(|&x| f64::from(x)).sum()
}

#[pipeline]
fn streamed_fan_in() {
    let a = big_array(BIG);
    let b = big_array(BIG);
    sum_all(vec![a, b]);
}

/// A fan-in list decodes every part, so streamed parts are read back from
/// the store (their bytes are nowhere else).
#[test]
fn a_fan_in_of_streamed_arrays_reads_every_part() {
    let _one_at_a_time = STREAMED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let stack = TestStack::new();
    let run = streamed_fan_in.run(&stack, &()).unwrap();
    let total: f64 = run.artifact("sum_all", "output").unwrap();
    assert_eq!(total, 2.0 * expected_sum(BIG));
}

/// An encoding that differs every time it is written: a broken materializer.
#[derive(Debug, Clone)]
struct Unstable;

struct UnstableMaterializer;

static WRITES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

impl zenflow::materializer::Materializer for UnstableMaterializer {
    type Value = Unstable;
    const ID: &'static str = "test.unstable";
    const VERSION: u32 = 1;

    fn save(_: &Unstable) -> Result<zenflow::materializer::Encoded, zenflow::materializer::MaterializeError> {
        Ok(zenflow::materializer::Encoded::new("raw", vec![0u8; 9 << 20]))
    }

    fn stream_hint(_: &Unstable) -> Option<(&'static str, u64)> {
        Some(("raw", 9 << 20))
    }

    fn save_to(_: &Unstable, out: &mut dyn std::io::Write) -> Result<(), zenflow::materializer::MaterializeError> {
        let byte = WRITES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        out.write_all(&vec![byte; 9 << 20]).unwrap();
        Ok(())
    }

    fn load(_: zenflow::materializer::Encoded) -> Result<Unstable, zenflow::materializer::MaterializeError> {
        Ok(Unstable)
    }
}

impl zenflow::Materialize for Unstable {
    type Materializer = UnstableMaterializer;
}

#[step]
fn make_unstable() -> Unstable {
    Unstable
}

#[pipeline]
fn unstable() {
    make_unstable();
}

/// The local store writes a streamed encoding in one pass: what it stores is
/// named by the hash of what was written, whatever the encoder does.
#[test]
fn a_streamed_output_is_named_by_the_hash_of_what_was_written() {
    let stack = TestStack::new();
    let run = unstable.run(&stack, &()).unwrap();
    let version = run.output_version("make_unstable", "output").unwrap();
    assert_eq!(version.metadata.size, 9 << 20);
    let bytes = stack.block_on(zenflow::artifact_store::read_version(stack.artifacts().as_ref(), version));
    assert_eq!(bytes.unwrap().len(), 9 << 20, "stored and verified against its recorded hash");
}

/// A store that must know the hash first (S3, memory) writes twice, and
/// refuses an encoder whose second pass differs from its first.
#[test]
fn an_encoding_that_changes_between_passes_is_refused_where_two_passes_are_needed() {
    let stack = zenflow::memory_stack(2).unwrap();
    let err = unstable.run(&stack, &()).unwrap_err();
    assert!(err.to_string().contains("must write the same bytes every time"), "{err}");
}
