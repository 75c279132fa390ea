//! Criterion benches of the hot paths named in issue 2 and BENCHMARKS.md.

use benches::{chain, fresh_stack};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::Array1;
use std::time::Duration;
use zenflow::artifact_store::get_verified;
use zenflow::materializer::{decode, encode, Encoded};
use zenflow::{Pipeline, RunOptions};

fn plan_compilation(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("compile_1000_step_chain", |b| b.iter(|| chain.plan(&1000).unwrap()));
    g.finish();
}

fn local_chain(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_stack");
    g.throughput(Throughput::Elements(50));
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    let no_cache = RunOptions { no_cache: true, ..Default::default() };
    // Steady state: one stack (and runtime), every step executed every time.
    let (_dir, stack) = fresh_stack();
    g.bench_function("chain_50_executed", |b| {
        b.iter(|| {
            let run = chain.run_with(&stack, &50, no_cache.clone()).unwrap();
            assert_eq!(run.executed().len(), 50);
        })
    });
    chain.run(&stack, &50).unwrap();
    g.bench_function("chain_50_cached", |b| {
        b.iter(|| {
            let run = chain.run(&stack, &50).unwrap();
            assert_eq!(run.cached().len(), 50);
        })
    });
    g.finish();
}

fn array_artifact(c: &mut Criterion) {
    let mut g = c.benchmark_group("artifact");
    let n = 25 * 1024 * 1024; // 100 MiB of f32
    g.throughput(Throughput::Bytes((n * 4) as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let array = Array1::from_shape_fn(n, |i| i as f32);
    let (_dir, stack) = fresh_stack();
    g.bench_function("save_load_100MiB_f32_array", |b| {
        b.iter(|| {
            let store = stack.artifacts().clone();
            let value = encode(&array).unwrap();
            let hash = value.hash;
            stack
                .block_on(async {
                    store.put(&hash, value.encoded.bytes.clone()).await.unwrap();
                    let bytes = get_verified(store.as_ref(), &hash).await.unwrap();
                    let back: Array1<f32> = decode(Encoded { format: value.encoded.format, bytes }).unwrap();
                    assert_eq!(back.len(), n);
                    // Identical bytes are stored once: delete so every iteration writes.
                    store.delete(&hash).await.unwrap();
                })
                .unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, plan_compilation, local_chain, array_artifact);
criterion_main!(benches);
