#!/usr/bin/env bash
# VNN-COMP install script: install_tool.sh v1
# Creates .venv in the repository root with torch (CUDA build where a GPU is present, CPU
# otherwise) and verirepair with its dependencies.
set -euo pipefail
[ "${1:-}" = "v1" ] || { echo "usage: $0 v1" >&2; exit 1; }
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install --quiet torch
else
    .venv/bin/pip install --quiet torch==2.13.0 || .venv/bin/pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
fi
.venv/bin/pip install --quiet -e .
.venv/bin/verirepair --help >/dev/null
echo "verirepair installed in $root/.venv"
