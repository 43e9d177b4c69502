#!/usr/bin/env bash
# `make gpu-check`: set up on a GPU machine without a network, then run gpu/check.py (its docstring says
# what it measures). The machine's python3 (PYTHON) must already have a CUDA build of torch, numpy, scipy,
# matplotlib, scikit-learn, tqdm, hypothesis and pytest; simpy comes from gpu/wheels/, and the project is
# installed from this tree with --no-deps into a folder of its own (PDASGD_GPU_SITE, default
# /tmp/pdasgd-gpu-site), so nothing of the machine's own packages changes.
# Arguments go to gpu/check.py: --out DIR (or PDASGD_GPU_OUT), --cpu for the dry mode.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
site="${PDASGD_GPU_SITE:-/tmp/pdasgd-gpu-site}"
install=("$python" -m pip install --quiet --no-index --no-deps --no-cache-dir --no-compile
    --disable-pip-version-check --upgrade --target "$site")
"${install[@]}" gpu/wheels/*.whl
"${install[@]}" --no-build-isolation .
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" gpu/check.py "$@"
