#!/usr/bin/env bash
# W7 of BENCHMARKS.md: W1_50, W2 and W4 on the staging stack (PostgreSQL
# metadata + S3 artifacts) beside the local stack, in one run.
#
#   bash benches/w7.sh [--repeats N]
#
# Uses the servers named by ZENFLOW_BENCH_POSTGRES_URL (an admin URL; each
# measurement gets a fresh database) and ZENFLOW_BENCH_S3_ENDPOINT, _BUCKET,
# _ACCESS_KEY, _SECRET_KEY; when they are missing it starts PostgreSQL and
# s3s-fs on 127.0.0.1 (.ci/services.sh) and stops them after. The benchmark
# connects without TLS (sslmode=disable), as a job beside its database on a
# private network would; add TLS to the URL to measure it too.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=9
[ "${1:-}" = "--repeats" ] && repeats=$2

if [ -z "${ZENFLOW_BENCH_POSTGRES_URL:-}" ]; then
    source .ci/services.sh
    svc_init
    svc_postgres 55433
    svc_s3 8015
    export ZENFLOW_BENCH_POSTGRES_URL="$ZENFLOW_TEST_POSTGRES_URL?sslmode=disable"
    export ZENFLOW_BENCH_S3_ENDPOINT=$ZENFLOW_TEST_S3_ENDPOINT ZENFLOW_BENCH_S3_BUCKET=$ZENFLOW_TEST_S3_BUCKET
    export ZENFLOW_BENCH_S3_ACCESS_KEY=$ZENFLOW_TEST_S3_ACCESS_KEY ZENFLOW_BENCH_S3_SECRET_KEY=$ZENFLOW_TEST_S3_SECRET_KEY
fi

cargo build -q --release -p benches --bins
./target/release/workloads --only W7 --repeats "$repeats" | tee /dev/stderr | python3 -c '
import json, sys
print("| workload | PostgreSQL + S3 | per step | local stack | ratio | one PG commit |")
print("|---|---|---|---|---|---|")
for d in map(json.loads, sys.stdin):
    print("| {} | {:.2f} ms | {:.0f} µs | {:.2f} ms | {:.1f}x | {:.2f} ms |".format(
        d["workload"], d["median_s"] * 1e3, d["per_step_s"] * 1e6, d["local_median_s"] * 1e3,
        d["ratio_to_local"], d["pg_commit_round_trip_median_s"] * 1e3))
'
