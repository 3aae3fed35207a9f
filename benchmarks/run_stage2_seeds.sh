#!/usr/bin/env bash
# Issue 24: the stage-2 variant chosen on validation (seed 42: frozen encoder, the first step carries the loss:
# --next_item_loss_weight 100) over seeds 42/43/44 with the test read once per seed, the GeniusRec-vs-encoder file,
# then the control (the encoder alone trained on at 1e-4, the joint variants' encoder rate) over the same seeds.
set -euo pipefail
PY=${PY:-python}
RES=benchmarks/results
ENC=runs/ml-1m-hstu-position
for seed in 42 43 44; do
  $PY -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path $ENC --next_item_loss_weight 100 \
      --seed $seed --output_dir runs/s2/chosen-$seed --results_file $RES/ml-1m-stage2-chosen-seed$seed.json
done
$PY -m benchmarks.stage2_vs_encoder --encoder $RES/ml-1m-hstu-position.json --seeds $RES/ml-1m-stage2-chosen-seed{42,43,44}.json \
    --output $RES/ml-1m-stage2-vs-encoder.json
for seed in 42 43 44; do
  $PY -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m --init_from $ENC --learning_rate 1e-4 \
      --num_train_epochs 8 --early_stopping_patience 3 --seed $seed --output_dir runs/s2/control-$seed \
      --results_file $RES/ml-1m-stage2-control-encoder-lr1e-4-seed$seed.json
done
$PY -m benchmarks.stage2_vs_encoder --label "encoder+8ep" --encoder $RES/ml-1m-hstu-position.json \
    --seeds $RES/ml-1m-stage2-control-encoder-lr1e-4-seed{42,43,44}.json --output $RES/ml-1m-stage2-control-vs-encoder.json
