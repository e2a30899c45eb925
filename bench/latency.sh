#!/usr/bin/env bash
# Batch-1 latency of bnc against onnxruntime on the same ONNX files, side by side in one
# script (bench/latency_vs_ort.py: alternating rounds, so load on a shared machine hits
# both alike). Builds bnc (release), sets up bench/.venv like run.sh, exports the ONNX
# files with compare.py when they are missing. Extra arguments go to latency_vs_ort.py,
# e.g. `bash bench/latency.sh --models resnet50 --threads 2 --rounds 9`.
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
mkdir -p "$here/out"
cp target/release/bnc "$here/out/bnc"
models="resnet18,resnet50,mobilenet_v2,efficientnet_b0,densenet121"
missing=""
for m in ${models//,/ }; do
    [ -f "$here/out/$m.onnx" ] || missing="$missing,$m"
done
if [ -n "$missing" ]; then
    "$venv/bin/python" "$here/compare.py" --bnc "$here/out/bnc" --models "${missing#,}" --runs 20
fi
exec "$venv/bin/python" "$here/latency_vs_ort.py" --bnc "$here/out/bnc" "$@"
