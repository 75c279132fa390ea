#!/usr/bin/env bash
# W8 of BENCHMARKS.md: W1_10 and W2 on a Ray head through the Ray
# orchestrator, beside a bare job (`true`) submitted through the same Jobs
# API in the same run, and W1_10 with fuse_chains = true.
#
#   bash benches/w8.sh [--repeats N]
#
# Uses ZENFLOW_BENCH_RAY_ADDRESS and the W7 variables (PostgreSQL, S3); when
# the Ray address is missing it starts PostgreSQL, s3s-fs and a Ray head
# (2 CPUs) on 127.0.0.1 (.ci/services.sh) and stops them after.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=5
[ "${1:-}" = "--repeats" ] && repeats=$2

if [ -z "${ZENFLOW_BENCH_RAY_ADDRESS:-}" ]; then
    source .ci/services.sh
    svc_init
    svc_postgres 55434
    svc_s3 8016
    export ZENFLOW_BENCH_POSTGRES_URL="$ZENFLOW_TEST_POSTGRES_URL?sslmode=disable"
    export ZENFLOW_BENCH_S3_ENDPOINT=$ZENFLOW_TEST_S3_ENDPOINT ZENFLOW_BENCH_S3_BUCKET=$ZENFLOW_TEST_S3_BUCKET
    export ZENFLOW_BENCH_S3_ACCESS_KEY=$ZENFLOW_TEST_S3_ACCESS_KEY ZENFLOW_BENCH_S3_SECRET_KEY=$ZENFLOW_TEST_S3_SECRET_KEY
    svc_ray 8267
    export ZENFLOW_BENCH_RAY_ADDRESS=$ZENFLOW_TEST_RAY_ADDRESS
fi

cargo build -q --release -p benches --bins
./target/release/workloads --only W8 --repeats "$repeats" | tee /dev/stderr | python3 -c '
import json, sys
print("| workload | median | per step | bare job | ratio | overlap |")
print("|---|---|---|---|---|---|")
for d in map(json.loads, sys.stdin):
    bare = d.get("bare_job_median_s") or d.get("bare_job_32_at_once_per_job_s") or 0
    overlap = d.get("steps_overlap")
    print("| {} | {:.2f} s | {:.3f} s | {:.3f} s | {:.2f} | {} |".format(
        d["workload"], d["median_s"], d["per_step_s"], bare, d["ratio_to_bare_job"],
        "{:.2f} (bare: {:.2f})".format(overlap, d["bare_jobs_overlap"]) if overlap else "—"))
'
