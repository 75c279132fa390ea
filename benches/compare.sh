#!/usr/bin/env bash
# zenflow beside ZenML on this machine, one right after the other.
#
#   bash benches/compare.sh            # full: zenflow W1-W6, ZenML W1-W5 (~15 min)
#   QUICK=1 bash benches/compare.sh    # ZenML harness in --quick mode (~3 min)
#
# Installs ZenML with the harness in ../shared/bench/zenml when missing (a
# venv at $VENV, default /tmp/zenml-venv), with `uv` on PATH, ZenML's fastest
# configuration (BENCHMARKS.md). Prints one markdown table: workload, zenflow
# median, ZenML median, ratio. Raw results stay in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${ZENML_HARNESS:-../shared/bench/zenml}
venv=${VENV:-/tmp/zenml-venv}
out=${OUT:-$(mktemp -d /tmp/zenflow-compare.XXXXXX)}
mkdir -p "$out"
[ -f "$harness/run_all.py" ] || { echo "the ZenML harness is not at $harness (set ZENML_HARNESS)" >&2; exit 2; }

if ! "$venv/bin/python" -c "import zenml" 2>/dev/null; then
    echo "== installing ZenML into $venv"
    VENV="$venv" OUT="$out/install.json" bash "$harness/install.sh"
fi
"$venv/bin/python" -m pip install -q uv 2>/dev/null || true
export PATH="$venv/bin:$PATH"

echo "== zenflow workloads"
cargo build -q --release -p benches --bins
./target/release/workloads --repeats 9 | tee "$out/zenflow.jsonl"

echo "== ZenML harness"
quick=()
[ "${QUICK:-0}" = 1 ] && quick=(--quick)
python3 "$harness/run_all.py" --python "$venv/bin/python" --out "$out/zenml" --only W1_10,W1_50,W2,W3,W4,W5 "${quick[@]}" \
    >"$out/zenml.log" 2>&1 || { tail -20 "$out/zenml.log" >&2; exit 1; }

python3 - "$out" <<'PY'
import json, os, platform, subprocess, sys, datetime
out = sys.argv[1]
zf = {}
for line in open(os.path.join(out, "zenflow.jsonl")):
    d = json.loads(line)
    zf[d["workload"]] = d
zm = json.load(open(os.path.join(out, "zenml", "summary.json")))["workloads"]
rows = [
    ("W1_10 (10-step chain)", zf.get("W1_10", {}).get("median_s"), zm.get("W1_10", {}).get("steady_median_s")),
    ("W1_50 (50-step chain)", zf.get("W1_50", {}).get("median_s"), zm.get("W1_50", {}).get("steady_median_s")),
    ("W2 (fan-out 32, fan-in)", zf.get("W2", {}).get("median_s"), zm.get("W2", {}).get("steady_median_s")),
    ("W3 (100 MiB array)", zf.get("W3", {}).get("median_s"), zm.get("W3", {}).get("steady_median_s")),
    ("W4 (cached re-run)", zf.get("W4", {}).get("median_s"), zm.get("W4", {}).get("steady_median_s")),
    ("W5 (one-step process)", zf.get("W5", {}).get("median_s"), zm.get("W5_one_step", {}).get("cold_wall_median_s")),
]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"\n{datetime.date.today()} · {os.cpu_count()} cores ({cpu}) · zenflow release build vs ZenML (uv on PATH)\n")
print("| workload | zenflow median | ZenML median | ZenML / zenflow |")
print("|---|---:|---:|---:|")
def fmt(s):
    return "–" if s is None else (f"{s*1000:.1f} ms" if s < 1 else f"{s:.2f} s")
for name, a, b in rows:
    ratio = f"{b/a:,.0f}×" if a and b else "–"
    print(f"| {name} | {fmt(a)} | {fmt(b)} | {ratio} |")
w3 = zf.get("W3", {})
if w3:
    print(f"\nW3 zenflow / raw write+fsync+read of the same bytes: {w3['ratio_to_raw']:.2f}×")
for w in ("W6_plan", "W6_chain"):
    if w in zf:
        sizes = ", ".join(
            f"{s.get('steps', s.get('fan_out'))}{'' if 'steps' in s else '-wide fan-out'}: {s['per_step_s']*1e6:.1f} µs/step"
            for s in zf[w]["sizes"]
        )
        print(f"{w}: {sizes}")
PY
echo "(raw results in $out)"
