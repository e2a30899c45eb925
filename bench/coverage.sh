#!/usr/bin/env bash
# Model coverage (issue 14): every torchvision classification and segmentation model with at
# most 150 M parameters, exported to ONNX with its batch-norms, run by bnc and onnxruntime
# (bench/coverage.py). Builds bnc and sets up bench/.venv (see setup.sh). Extra arguments go to
# coverage.py, e.g. `bash bench/coverage.sh --models resnet18,fcn_resnet50 --timeout 600`.
# Results: bench/out/coverage.md and coverage.json; exports cached in bench/out/coverage/.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
exec "$venv/bin/python" "$here/coverage.py" --bnc "$bnc" "$@"
