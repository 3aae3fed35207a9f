#!/usr/bin/env bash
# Issue 27: item text in stage 2 on the per-position encoder (the strongest next-item stage 2: frozen encoder,
# --next_item_loss_weight 100), with and without MiniLM text, seeds 42/43/44, same recipe and epoch budget; each
# results file carries the popularity-bucket table (metrics.test head_/torso_/tail_*). Needs
# `python -m data_scripts.embed --dataset data/ml-1m --text_model minilm --output_name text-minilm.safetensors`.
set -euo pipefail
PY=${PY:-python}
RES=benchmarks/results
ENC=runs/ml-1m-hstu-position
RECIPE="--config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path $ENC --next_item_loss_weight 100"
for seed in ${SEEDS:-42 43 44}; do
  $PY -m train.finetune $RECIPE --seed $seed --output_dir runs/s27/no-text-$seed --results_file $RES/ml-1m-geniusrec-no-text-seed$seed.json
  $PY -m train.finetune $RECIPE --seed $seed --use_text_embeddings true --text_embeddings text-minilm.safetensors \
      --output_dir runs/s27/text-$seed --results_file $RES/ml-1m-geniusrec-text-seed$seed.json
done
$PY -m benchmarks.aggregate_seeds --output $RES/ml-1m-geniusrec-no-text.json $RES/ml-1m-geniusrec-no-text-seed{42,43,44}.json
$PY -m benchmarks.aggregate_seeds --output $RES/ml-1m-geniusrec-text.json $RES/ml-1m-geniusrec-text-seed{42,43,44}.json
