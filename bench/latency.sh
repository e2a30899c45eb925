#!/usr/bin/env bash
# Batch-1 latency of bnc against onnxruntime and OpenVINO (f32) on the same ONNX files, side
# by side in one script (bench/latency_vs_peers.py: alternating rounds, so load on a shared
# machine hits every engine alike). Builds bnc and sets up bench/.venv (see setup.sh),
# exports the ONNX files with compare.py when they are missing. Extra arguments go to
# latency_vs_peers.py, e.g. `bash bench/latency.sh --models resnet50 --threads 2 --rounds 9`,
# or, to time a refactor in the same run, `bash bench/latency.sh --bnc-before /path/to/old/bnc`
# (this tree's build is then "after").
set -euo pipefail
source "$(dirname "$0")/setup.sh"
models="resnet18,resnet50,mobilenet_v2,efficientnet_b0,densenet121"
missing=""
for m in ${models//,/ }; do
    [ -f "$here/out/$m.onnx" ] && [ -f "$here/out/$m.input.npy" ] || missing="$missing,$m"
done
if [ -n "$missing" ]; then
    "$venv/bin/python" "$here/compare.py" --bnc "$bnc" --models "${missing#,}" --runs 20
fi
exec "$venv/bin/python" "$here/latency_vs_peers.py" --bnc "$bnc" "$@"
