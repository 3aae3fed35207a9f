#!/usr/bin/env bash
# Issue 24: the chosen stage-2 recipe on the strongest encoder (the per-position HSTU + its low-rate phase, seed 42 of
# the control: runs/s2/control-42, test NDCG@10 .1980), seeds 42/43/44, test read once per seed; then GeniusRec vs
# that encoder on the same users.
set -euo pipefail
PY=${PY:-python}
RES=benchmarks/results
ENC=runs/s2/control-42
for seed in 42 43 44; do
  $PY -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path $ENC --next_item_loss_weight 100 \
      --seed $seed --output_dir runs/s2/annealed-chosen-$seed --results_file $RES/ml-1m-stage2-annealed-encoder-chosen-seed$seed.json
done
$PY -m benchmarks.stage2_vs_encoder --encoder $RES/ml-1m-stage2-control-encoder-lr1e-4-seed42.json \
    --seeds $RES/ml-1m-stage2-annealed-encoder-chosen-seed{42,43,44}.json --output $RES/ml-1m-stage2-vs-annealed-encoder.json
