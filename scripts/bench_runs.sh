#!/usr/bin/env bash
# Run the benchmark suite RUNS times (default 5), one after another, each in a fresh process, and
# pool the runs into one report: DIR/1.json ... DIR/RUNS.json (pytest-benchmark JSON) and
# DIR/report.md (benchmarks/report.py: each row the median of the runs' medians with the lowest and
# highest of them, each target ratio formed within each run). The spread of one run does not hold
# what changes between runs on a shared machine; the runs' range does (README, "Benchmarks").
#
#   scripts/bench_runs.sh DIR [RUNS] [PYTEST ARGS...]      # e.g. scripts/bench_runs.sh bench-runs 5 -k mix
#   python -m benchmarks.report DIR --command "..."          # the pooled section -> benchmarks/RESULTS.md
#   python -m benchmarks.report --compare DIR OTHER_DIR      # do two such reports agree?
#
# PYTHON (default: .venv/bin/python when present, else python3) runs pytest and the report.
set -euo pipefail
given="${1:?usage: scripts/bench_runs.sh DIR [RUNS] [PYTEST ARGS...]}"
runs="${2:-5}"
shift $(($# >= 2 ? 2 : 1))
command="scripts/bench_runs.sh $given $runs${*:+$(printf ' %q' "$@")}"
dir="$(realpath -m "$given")"  # DIR is relative to where the script is called from
cd "$(dirname "$0")/.."
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "RUNS: expected a positive whole number, got '$runs'" >&2; exit 2; }
if compgen -G "$dir/*.json" > /dev/null; then
  echo "DIR: $given already holds runs (*.json); give an empty or new directory, so that only these runs are pooled" >&2
  exit 2
fi
PY="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}"
mkdir -p "$dir"
for i in $(seq 1 "$runs"); do
  echo "== run $i of $runs"
  "$PY" -m pytest benchmarks --benchmark-only -q -p no:cacheprovider --benchmark-json "$dir/$i.json" "$@"
done
"$PY" -m benchmarks.report "$dir" --command "$command" --out "$dir/report.md"
