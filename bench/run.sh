#!/usr/bin/env bash
# Builds bnc (release), sets up bench/.venv (torch, torchvision, onnx, onnxruntime from PyPI;
# about 700 MB or more the first time), and runs bench/compare.py. Extra arguments go to
# compare.py, e.g. `bash bench/run.sh --models resnet18,mobilenet_v2 --runs 30`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
cargo build --release --bin bnc
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
fi
if ! "$venv/bin/python" -c "import torch, torchvision, onnx, onnxruntime, numpy" 2>/dev/null; then
    "$venv/bin/pip" install torch torchvision onnx onnxruntime numpy
fi
# A private copy of the binary: a rebuild during the run must not change what is measured.
mkdir -p "$here/out"
cp target/release/bnc "$here/out/bnc"
exec "$venv/bin/python" "$here/compare.py" --bnc "$here/out/bnc" "$@"
