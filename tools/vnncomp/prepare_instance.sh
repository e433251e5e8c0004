#!/usr/bin/env bash
# VNN-COMP prepare script: prepare_instance.sh v1 CATEGORY ONNX VNNLIB
# Stops verirepair processes left from an earlier instance, then checks that both files load
# (so a broken instance fails here, not during the timed run).
set -uo pipefail
[ "${1:-}" = "v1" ] && [ $# -eq 4 ] || { echo "usage: $0 v1 CATEGORY ONNX VNNLIB" >&2; exit 1; }
root="$(cd "$(dirname "$0")/../.." && pwd)"
pkill -f "verirepair verify" 2>/dev/null || true
"$root/.venv/bin/verirepair" info "$3" "$4" >/dev/null
