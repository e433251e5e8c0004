#!/usr/bin/env bash
# VNN-COMP run script: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT
# Settings are the same for every category and instance (none is keyed on file names). The
# verifier gets the timeout minus START_UP seconds for interpreter start-up and imports, so it
# answers before the deadline; the results file is written by verirepair itself (atomically).
set -uo pipefail
[ "${1:-}" = "v1" ] && [ $# -eq 6 ] || { echo "usage: $0 v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT" >&2; exit 1; }
root="$(cd "$(dirname "$0")/../.." && pwd)"
START_UP=4
budget=$(python3 -c "print(max(1.0, float('$6') - $START_UP))")
"$root/.venv/bin/verirepair" verify "$3" "$4" --timeout "$budget" --results-file "$5" --device auto
code=$?
# 0 unsat, 10 sat, 20 unknown, 21 timeout are answers; anything else is an error.
case $code in
    0|10|20|21) exit 0 ;;
    *) [ -f "$5" ] || echo "error" > "$5"; exit 0 ;;
esac
