#!/usr/bin/env bash
# Measure what the default `erlgym train` run does for the default model: held-out
# first-attempt success before and after training, and the run's wall time.
#
# Usage: bash benchmarks/default_run.sh [ENV_ID] [METHOD] [EPISODES] [TRAIN OPTIONS...]
# Writes benchmarks/results/default_run-<env>-<method>[-<tag>].json and the run's
# metrics.jsonl next to it, and keeps the run directory under benchmarks/results/runs/.
# TRAIN OPTIONS go to erlgym train (e.g. --steps 16); set TAG to name such a variant.
set -euo pipefail

env_id=${1:-erlgym/FrozenLake-v0}
method=${2:-erl}
episodes=${3:-64}
shift $(( $# < 3 ? $# : 3 ))
name=$(basename "$env_id")-$method${TAG:+-$TAG}
results=benchmarks/results
run_dir=$results/runs/$name-$(date +%Y%m%d-%H%M%S)
mkdir -p "$results/runs"

if [[ ! -f "$results/eval-before-$name.json" || -z "${TAG:-}" ]]; then
    erlgym eval --env "$env_id" --model default --episodes "$episodes" --out "$results/eval-before-$name.json" > /dev/null
fi

started=$(date +%s)
erlgym train --env "$env_id" --method "$method" --output-dir "$run_dir" "$@"
cp "$run_dir/metrics.jsonl" "$results/default_run-$name-metrics.jsonl"
train_seconds=$(( $(date +%s) - started ))

erlgym eval --model "$run_dir" --episodes "$episodes" --out "$results/eval-after-$name.json" > /dev/null

python - "$results" "$name" "$run_dir" "$train_seconds" <<'EOF'
import json, os, platform, sys
from pathlib import Path

results, name, run_dir, train_seconds = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
before = json.loads((results / f"eval-before-{name}.json").read_text())
after = json.loads((results / f"eval-after-{name}.json").read_text())
steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
summary = {
    "run_dir": str(run_dir),
    "train_seconds": train_seconds,
    "first_step_seconds": steps[0]["time/step_s"] if steps else None,
    "steps": len(steps),
    "success_before": before["eval/success_rate"],
    "success_after": after["eval/success_rate"],
    "success_change_points": round(100 * (after["eval/success_rate"] - before["eval/success_rate"]), 1),
    "before": before,
    "after": after,
    "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
}
(results / f"default_run-{name}.json").write_text(json.dumps(summary, indent=2))
print(json.dumps({key: value for key, value in summary.items() if key not in ("before", "after")}, indent=2))
EOF
