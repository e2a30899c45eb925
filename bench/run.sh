#!/usr/bin/env bash
# Builds bnc (release), sets up bench/.venv (see setup.sh) and runs bench/compare.py. Extra
# arguments go to compare.py, e.g. `bash bench/run.sh --models resnet18,mobilenet_v2 --runs 30`.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
exec "$venv/bin/python" "$here/compare.py" --bnc "$bnc" "$@"
