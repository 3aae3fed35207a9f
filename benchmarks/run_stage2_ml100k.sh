#!/usr/bin/env bash
# Issue 24, item 5: the stage-2 recipe chosen on ML-1M, run unchanged on ML-100K (no target: does it generalise?).
# Stage 1: the per-position HSTU config of ML-1M; stage 2: the recipe chosen on ML-1M validation (RECIPE: flags added to
# train/configs/ml-1m-geniusrec.json: frozen encoder, the first step carries the loss)
# over seeds 42/43/44, test read once per seed; then the same aggregate as ML-1M.
set -euo pipefail
PY=${PY:-python}
RES=benchmarks/results
RECIPE=${RECIPE:---next_item_loss_weight 100}
$PY -m data_scripts.movielens --variant ml-100k --out data/ml-100k
$PY -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-100k --output_dir runs/ml-100k-hstu-position \
    --results_file $RES/ml-100k-hstu-position.json
for seed in 42 43 44; do
  $PY -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-100k --encoder_path runs/ml-100k-hstu-position \
      $RECIPE --seed $seed --output_dir runs/ml-100k-stage2-$seed --results_file $RES/ml-100k-stage2-seed$seed.json
done
$PY -m benchmarks.stage2_vs_encoder --encoder $RES/ml-100k-hstu-position.json --seeds $RES/ml-100k-stage2-seed{42,43,44}.json \
    --output $RES/ml-100k-stage2-vs-encoder.json
