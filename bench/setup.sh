# Sourced by run.sh and latency.sh: builds bnc (release), sets up bench/.venv (torch,
# torchvision, onnx, onnxruntime, openvino from PyPI; several GB the first time: PyPI's torch
# brings its CUDA libraries) and copies the binary to bench/out/bnc. Sets `here` (bench/),
# `venv` and `bnc`.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
cargo build --release --bin bnc
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
fi
if ! "$venv/bin/python" -c "import torch, torchvision, onnx, onnxruntime, openvino, numpy" 2>/dev/null; then
    "$venv/bin/pip" install torch torchvision onnx onnxruntime openvino numpy
fi
# A private copy of the binary: a rebuild during the run must not change what is measured.
mkdir -p "$here/out"
cp target/release/bnc "$here/out/bnc"
bnc="$here/out/bnc"
