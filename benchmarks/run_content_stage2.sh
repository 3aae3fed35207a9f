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
# Text-path variants on validation (seed 42, --evaluate_test false): the text expert without text in the output item
# vectors (--content_output false), soft whitening (--content_preprocessing shrink), and the former at lr 2e-4.
VAL="$RECIPE --seed 42 --evaluate_test false --use_text_embeddings true --text_embeddings text-minilm.safetensors"
$PY -m train.finetune $VAL --content_output false --output_dir runs/s27/abl-no-content-output-42 \
    --results_file $RES/ml-1m-content-stage2-ablation-no-content-output-seed42.json
$PY -m train.finetune $VAL --content_preprocessing shrink --output_dir runs/s27/abl-shrink-42 --results_file $RES/ml-1m-content-stage2-ablation-shrink-seed42.json
$PY -m train.finetune $VAL --content_output false --learning_rate 0.0002 --output_dir runs/s27/abl-no-content-output-lr2e-4-42 \
    --results_file $RES/ml-1m-content-stage2-ablation-no-content-output-lr2e-4-seed42.json
# The best of them on validation (text expert only, lr 2e-4) over 3 seeds with the test read, and ID only at the same lr.
for seed in 42 43 44; do
  $PY -m train.finetune $RECIPE --seed $seed --use_text_embeddings true --text_embeddings text-minilm.safetensors --content_output false \
      --learning_rate 0.0002 --output_dir runs/s27/text-expert-only-lr2e-4-$seed --results_file $RES/ml-1m-geniusrec-text-expert-only-lr2e-4-seed$seed.json
  $PY -m train.finetune $RECIPE --seed $seed --learning_rate 0.0002 --output_dir runs/s27/no-text-lr2e-4-$seed \
      --results_file $RES/ml-1m-geniusrec-no-text-lr2e-4-seed$seed.json
done
