#!/usr/bin/env bash
# The item-content benchmark of BENCHMARKS.md "Item content", one run at a time (run it alone: the stage-1 runs have a
# wall-clock budget). Usage: benchmarks/run_content.sh <text flags chosen on validation by benchmarks/content_ablation.py>
#   e.g. benchmarks/run_content.sh --text_embeddings text-minilm.safetensors --content_adapter mlp
# Writes runs/content/* and runs/results/ml-1m-{hstu-no-text,hstu-text,geniusrec-no-text,geniusrec-text}*.json,
# ml-1m-cold-items*.json. SECONDS_PER_RUN (default 480) is each stage-1 run's budget; SEEDS (default "42 43 44") stage 2's.
set -euo pipefail
PY=${PY:-python}
DATA=${DATA:-data/ml-1m}
OUT=${OUT:-runs/content}
RES=${RES:-runs/results}
BUDGET=${SECONDS_PER_RUN:-480}
SEEDS=${SEEDS:-"42 43 44"}
TEXT=("$@")
TEXT_FILE=$(printf '%s\n' "$@" | grep -A1 -- '--text_embeddings' | tail -1)
mkdir -p "$OUT" "$RES"
stage1() {  # name protocol [flags...]
  local name=$1 protocol=$2; shift 2
  [ -f "$OUT/$name/model.safetensors" ] && return 0
  $PY -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset "$DATA" --protocol "$protocol" --max_train_seconds "$BUDGET" \
    --output_dir "$OUT/$name" --results_file "$RES/ml-1m-$name.json" --disable_tqdm true "$@"
}
stage2() {  # name encoder protocol seed [flags...]
  local name=$1 encoder=$2 protocol=$3 seed=$4; shift 4
  [ -f "$OUT/$name/model.safetensors" ] && return 0
  $PY -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset "$DATA" --encoder_path "$OUT/$encoder" --protocol "$protocol" \
    --seed "$seed" --output_dir "$OUT/$name" --results_file "$RES/ml-1m-$name.json" --disable_tqdm true "$@"
}
stage1 hstu-no-text leave-one-out
stage1 hstu-text leave-one-out "${TEXT[@]}"
stage1 cold-hstu-no-text cold-items
stage1 cold-hstu-text cold-items "${TEXT[@]}"
stage2 cold-geniusrec-no-text cold-hstu-no-text cold-items 42
stage2 cold-geniusrec-text cold-hstu-text cold-items 42 --use_text_embeddings true --text_embeddings "$TEXT_FILE"
$PY -m benchmarks.cold_items --dataset "$DATA" --hstu "$OUT/cold-hstu-no-text" --hstu_text "$OUT/cold-hstu-text" \
  --geniusrec "$OUT/cold-geniusrec-no-text" --geniusrec_text "$OUT/cold-geniusrec-text" --content_embeddings "$TEXT_FILE" \
  --output "$RES/ml-1m-cold-items.json"
for seed in $SEEDS; do
  stage2 geniusrec-no-text-seed$seed hstu-no-text leave-one-out "$seed"
  stage2 geniusrec-text-seed$seed hstu-text leave-one-out "$seed" --use_text_embeddings true --text_embeddings "$TEXT_FILE"
done
$PY -m benchmarks.aggregate_seeds --output "$RES/ml-1m-geniusrec-no-text.json" "$RES"/ml-1m-geniusrec-no-text-seed*.json
$PY -m benchmarks.aggregate_seeds --output "$RES/ml-1m-geniusrec-text.json" "$RES"/ml-1m-geniusrec-text-seed*.json
