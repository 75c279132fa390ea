//! Criterion benches of the hot paths named in issue 2 and BENCHMARKS.md.

use benches::{chain, fresh_stack};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::Array1;
use std::time::Duration;
use zenflow::artifact_store::get_verified;
use zenflow::materializer::{decode, encode, encode_owned, Encoded};
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
    // What the runner does with a large output: write it to the store
    // straight from the value, hashed as it is written (no encoded copy), and what a reader
    // in another process does: read, verify, decode.
    g.bench_function("store_load_100MiB_f32_array_streamed", |b| {
        b.iter_batched(
            || array.clone(),
            |array| {
                let store = stack.artifacts().clone();
                let value = encode_owned(array).unwrap();
                let streamed = value.streamed.clone().expect("a 100 MiB array is streamed");
                stack
                    .stores()
                    .block_on(async {
                        let (hash, _) = store.put_hashed(streamed.write.clone()).await.unwrap();
                        let bytes = get_verified(store.as_ref(), &hash).await.unwrap();
                        let back: Array1<f32> = decode(Encoded { format: value.encoded.format, bytes }).unwrap();
                        assert_eq!(back.len(), n);
                        // Identical bytes are stored once: delete so every iteration writes.
                        store.delete(&hash).await.unwrap();
                    })
                    .unwrap();
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn hot_paths(c: &mut Criterion) {
    use zenflow::conformance::metadata::{artifact, step_write};
    use zenflow::metadata::StepStatus;
    let mut g = c.benchmark_group("hot_path");
    let plan = chain.plan(&2).unwrap();
    let inputs = vec![vec![zenflow::ContentHash::of(b"input")]];
    g.bench_function("cache_key", |b| b.iter(|| zenflow::cache::cache_key(&plan.steps[1], &inputs)));

    let small: std::collections::BTreeMap<String, f64> = (0..20).map(|i| (format!("metric_{i}"), i as f64)).collect();
    g.bench_function("serde_save_load_small", |b| {
        b.iter(|| {
            let e = encode(&small).unwrap();
            let _: std::collections::BTreeMap<String, f64> = decode(e.encoded).unwrap();
        })
    });
    let array = Array1::from_shape_fn(2_500_000, |i| i as f32); // 10 MB
    g.throughput(Throughput::Bytes(10_000_000));
    g.bench_function("npy_save_load_10MB", |b| {
        b.iter(|| {
            let e = encode(&array).unwrap();
            let _: Array1<f32> = decode(e.encoded).unwrap();
        })
    });
    g.throughput(Throughput::Elements(1));

    // The floor of a durable artifact file: write, fsync, rename, fsync the folder.
    let dir = tempfile::tempdir().unwrap();
    let folder = std::fs::File::open(dir.path()).unwrap();
    let mut n = 0u64;
    g.bench_function("durable_small_file", |b| {
        b.iter(|| {
            use std::io::Write;
            n += 1;
            let tmp = dir.path().join(format!("tmp{n}"));
            let mut f = std::fs::File::create(&tmp).unwrap();
            f.write_all(b"12345678").unwrap();
            f.sync_all().unwrap();
            std::fs::rename(&tmp, dir.path().join(format!("obj{n}"))).unwrap();
            folder.sync_all().unwrap();
        })
    });

    // One executed step's record: what a step pays (it joins the open batch
    // of the group commit), and the same write committed and synced on its
    // own (the floor of one durable commit on this disk).
    let (_dir, stack) = fresh_stack();
    let run = zenflow::conformance::metadata::new_run("bench", "bench-run");
    stack.block_on(stack.metadata().create_run(&run)).unwrap();
    let write = || {
        let mut write = step_write(&run.id, "inc", StepStatus::Completed);
        write.step_run.cache_key = Some("k".into());
        write.new_outputs = vec![artifact("bench", "inc", b"1")];
        stack.block_on(stack.metadata().write_step_run(&write)).unwrap();
    };
    g.bench_function("sqlite_write_completed_step_run_batched", |b| b.iter(&write));
    g.bench_function("sqlite_write_completed_step_run_synced", |b| {
        b.iter(|| {
            write();
            stack.block_on(stack.metadata().flush()).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, plan_compilation, local_chain, array_artifact, hot_paths);
criterion_main!(benches);
