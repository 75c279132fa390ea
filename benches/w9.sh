#!/usr/bin/env bash
# W9 and W10 of BENCHMARKS.md, side by side in one run: the same depth-5
# scikit-learn decision tree (breast cancer, 30 features) served by
# zenflow's `serve`, by MLServer (sklearn runtime) and by `mlflow models
# serve`, driven one after the other by the same Rust load generator
# (benches/src/bin/oip_load.rs) with the same held-out rows; then W10, a
# deployment of a new version while W9's load runs.
#
# MLServer and MLflow are installed from PyPI into their own virtualenvs
# under target/bench-tools when missing. Everything listens on 127.0.0.1.
# Usage: bash benches/w9.sh [SECONDS per measurement, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
tools="$PWD/target/bench-tools"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

venv() { # name, packages...
    local dir="$tools/$1"
    shift
    if [ ! -x "$dir/bin/python" ] || [ ! -f "$dir/.installed" ]; then
        python3 -m venv "$dir"
        "$dir/bin/pip" install -q --disable-pip-version-check "$@" >/dev/null
        touch "$dir/.installed"
    fi
}
# uvloop 0.22 breaks MLServer 1.7's inference pool ("no current event loop").
venv mlserver-venv mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn==1.9.1 uvloop==0.21.0
venv mlflow-venv mlflow==3.17.2 scikit-learn==1.9.1

cargo build -q --release -p benches --bin oip_load --bin tree_server
load="$PWD/target/release/oip_load"
tree_server="$PWD/target/release/tree_server"

echo "== training the tree (scikit-learn) and writing it for each server"
"$tools/mlserver-venv/bin/python" benches/w9/train_tree.py "$work/model"
"$tools/mlflow-venv/bin/python" benches/w9/train_tree.py "$work/model" --mlflow 2>/dev/null

wait_url() { # url, what
    for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done
    echo "$2 did not come up ($1)" >&2
    return 1
}
measure() { # name, url, bodies -> two JSON lines in $work/NAME.c16 / .c1
    "$load" "$2" "$3" --concurrency 16 --seconds "$secs" --warmup 2 >"$work/$1.c16"
    "$load" "$2" "$3" --concurrency 1 --seconds "$secs" --warmup 2 >"$work/$1.c1"
}

echo "== zenflow serve"
export ZENFLOW_DEPLOY_TOKEN="bench-$RANDOM$RANDOM"
mkdir -p "$work/zenflow"
cat >"$work/zenflow/zenflow.toml" <<'TOML'
[stacks.bench]
metadata_store = "sqlite://.zenflow/zenflow.db"
artifact_store = "file://.zenflow/artifacts"

[stacks.bench.deployer]
url = "http://127.0.0.1:18190"
token = "${ZENFLOW_DEPLOY_TOKEN}"
TOML
zf() { ZENFLOW_PROJECT_ROOT="$work/zenflow" "$tree_server" "$@"; }
zf -q run --stack bench --set tree="$work/model/tree.json"
zf models promote breast-cancer 1 --to production --expect none --stack bench >/dev/null
zf -v serve --stack bench --model breast-cancer --bind 127.0.0.1:18190 --poll off \
    >"$work/zenflow.out" 2>"$work/zenflow.log" &
pids+=($!)
zenflow_pid=$!
wait_url http://127.0.0.1:18190/v2/health/ready "zenflow serve"
measure zenflow http://127.0.0.1:18190/v2/models/breast-cancer/infer "$work/model/bodies_oip.jsonl"

echo "== W10: deploying v2 while W9's load (16 clients) runs"
zf -q run --stack bench --set tree="$work/model/tree_v2.json"
"$load" http://127.0.0.1:18190/v2/models/breast-cancer/infer "$work/model/bodies_oip.jsonl" \
    --concurrency 16 --seconds "$secs" --warmup 1 --versions >"$work/swap.json" &
load_pid=$!
sleep $(( secs / 2 + 1 ))
zf models deploy breast-cancer 2 --stack bench
wait "$load_pid"
kill -TERM "$zenflow_pid"
wait "$zenflow_pid" || true

echo "== MLServer $("$tools/mlserver-venv/bin/pip" show mlserver 2>/dev/null | awk '/^Version/{print $2}') (sklearn runtime, its default settings but the ports and 127.0.0.1)"
mkdir -p "$work/mlserver"
cp "$work/model/model.joblib" "$work/model/model-settings.json" "$work/mlserver/"
echo '{"host": "127.0.0.1", "http_port": 18191, "grpc_port": 18192, "metrics_port": 18193}' >"$work/mlserver/settings.json"
"$tools/mlserver-venv/bin/mlserver" start "$work/mlserver" >"$work/mlserver.log" 2>&1 &
pids+=($!)
mlserver_pid=$!
wait_url http://127.0.0.1:18191/v2/models/breast-cancer/ready "MLServer"
measure mlserver http://127.0.0.1:18191/v2/models/breast-cancer/infer "$work/model/bodies_oip.jsonl"
kill -TERM "$mlserver_pid"
wait "$mlserver_pid" 2>/dev/null || true

echo "== mlflow models serve $("$tools/mlflow-venv/bin/pip" show mlflow 2>/dev/null | awk '/^Version/{print $2}') (/invocations)"
PATH="$tools/mlflow-venv/bin:$PATH" MLFLOW_TRACKING_URI="file://$work/mlruns" \
    setsid "$tools/mlflow-venv/bin/mlflow" models serve -m "$work/model/mlflow-model" --env-manager local \
    -h 127.0.0.1 -p 18194 >"$work/mlflow.log" 2>&1 &
pids+=($!)
mlflow_pid=$!
wait_url http://127.0.0.1:18194/ping "mlflow models serve"
measure mlflow http://127.0.0.1:18194/invocations "$work/model/bodies_mlflow.jsonl"
kill -TERM -- "-$mlflow_pid" 2>/dev/null || kill -TERM "$mlflow_pid"

python3 - "$work" <<'PY'
import json, re, sys, datetime
work = sys.argv[1]
r = {n: {c: json.load(open(f"{work}/{n}.{c}")) for c in ("c16", "c1")} for n in ("zenflow", "mlserver", "mlflow")}
z, m = r["zenflow"], r["mlserver"]
print(f"\nW9 ({z['c16']['seconds']:.0f} s per measurement, one held-out row per request)\n")
print(f"| server | req/s at c=16 | p50 at c=1 | p99 at c=1 | failed |")
print(f"|---|---|---|---|---|")
for name, label in (("zenflow", "zenflow serve"), ("mlserver", "MLServer (sklearn)"), ("mlflow", "mlflow models serve")):
    x = r[name]
    print(f"| {label} | {x['c16']['rps']:,.0f} | {x['c1']['p50_ms']:.3f} ms | {x['c1']['p99_ms']:.3f} ms | {x['c16']['failed'] + x['c1']['failed']} |")
thr = z["c16"]["rps"] / m["c16"]["rps"]
p99 = z["c1"]["p99_ms"] / m["c1"]["p99_ms"]
print(f"\nthroughput vs MLServer: {thr:.1f}x (target >= 20x: {'met' if thr >= 20 else 'NOT met'})")
print(f"p99 at c=1 vs MLServer: {p99:.3f} (target <= 0.25: {'met' if p99 <= 0.25 else 'NOT met'})")
print(f"throughput vs mlflow: {z['c16']['rps'] / r['mlflow']['c16']['rps']:.1f}x")
s = json.load(open(f"{work}/swap.json"))
steady = z["c16"]["p99_ms"]
print(f"\nW10 (deploying v2 under 16 clients): {s['requests']:,} requests, {s['failed']} failed, versions {json.dumps({k: v['answers'] for k, v in s['versions'].items()})}")
swap_p99 = s.get("swap_p99_ms")
if swap_p99 is not None:
    print(f"p99 within 1 s of the swap {swap_p99:.3f} ms vs steady {steady:.3f} ms: {swap_p99 / steady:.2f}x (target <= 2x: {'met' if swap_p99 <= 2 * steady else 'NOT met'})")
log = open(f"{work}/zenflow.log").read()
swapped = re.search(r"^(\S+).*v2 serves", log, re.M)
if swapped and "2" in s["versions"]:
    at = datetime.datetime.fromisoformat(swapped.group(1).replace("Z", "+00:00")).timestamp() * 1000
    delay = s["versions"]["2"]["first_ms"] - at
    print(f"first answer from v2 {delay:.1f} ms after the swap (target <= 100 ms: {'met' if delay <= 100 else 'NOT met'})")
print(f"0 failed requests during the swap: {'met' if s['failed'] == 0 else 'NOT met'}")
PY
