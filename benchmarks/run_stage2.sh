#!/usr/bin/env bash
# Issue 24, "stage 2 earns its place": the stage-2 variants on the per-position encoder (validation only, seed 42),
# then the chosen recipe over seeds 42/43/44 with the test read once, one run at a time. Each run writes
# benchmarks/results/ml-1m-stage2-<variant>-seed<seed>.json with its command, machine, date and commit.
# Needs runs/ml-1m-hstu-position (stage 1: train/configs/ml-1m-hstu.json, see BENCHMARKS.md).
set -euo pipefail
PY=${PY:-python}
RES=benchmarks/results
ENC=runs/ml-1m-hstu-position
S2="--config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path $ENC"
STAGE=${1:-variants}
if [ "$STAGE" = variants ]; then
  # the shipped recipe: encoder frozen
  $PY -m train.finetune $S2 --evaluate_test false --output_dir runs/s2/frozen-42 --results_file $RES/ml-1m-stage2-frozen-seed42.json
  # joint fine-tuning: encoder unfrozen at 1e-4 with its own stage-1 loss kept (weight 1)
  $PY -m train.finetune $S2 --freeze_encoder false --encoder_learning_rate 1e-4 --encoder_loss_weight 1 --evaluate_test false \
      --output_dir runs/s2/joint-lr1e-4-42 --results_file $RES/ml-1m-stage2-joint-lr1e-4-seed42.json
  # control: the encoder alone, trained on at the same encoder learning rate (no decoder)
  $PY -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m --init_from $ENC --learning_rate 1e-4 \
      --num_train_epochs 8 --early_stopping_patience 3 --evaluate_test false --output_dir runs/s2/encoder-lr1e-4-42 \
      --results_file $RES/ml-1m-stage2-encoder-continued-lr1e-4-seed42.json
  # run at commit 1e9f935 only (a frozen encoder kept in eval mode while the decoder trains; reverted: no effect):
  # $PY -m train.finetune $S2 --evaluate_test false --output_dir runs/s2/frozen-evalenc-42 --results_file $RES/ml-1m-stage2-frozen-evalenc-seed42.json
  # $PY -m train.finetune $S2 --evaluate_test false --next_item_loss_weight 100 --output_dir runs/s2/frozen-evalenc-next-only-42 \
  #     --results_file $RES/ml-1m-stage2-frozen-evalenc-next-only-seed42.json
  # joint fine-tuning with the first step carrying the decoder's loss
  $PY -m train.finetune $S2 --evaluate_test false --freeze_encoder false --encoder_learning_rate 1e-4 --encoder_loss_weight 1 \
      --next_item_loss_weight 100 --output_dir runs/s2/joint-next-only-42 --results_file $RES/ml-1m-stage2-joint-lr1e-4-next-only-seed42.json
  # chosen on validation: the largest validation NDCG@10 among GeniusRec variants -> benchmarks/run_stage2_seeds.sh
fi
if [ "$STAGE" = alternatives ]; then
  # alternative sessions (generate(num_return_sequences=3, shared_item_penalty=inf)) at the quick-start size on the
  # sessions split: HSTU (train/configs/quickstart.json) then the shipped stage-2 recipe, test users read once
  $PY -m train.pretrain --config train/configs/quickstart.json --dataset data/ml-1m --protocol sessions --output_dir runs/alt/hstu \
      --results_file runs/alt/hstu.json
  $PY -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --protocol sessions --encoder_path runs/alt/hstu \
      --max_length 100 --num_train_epochs 3 --evaluate_test false --output_dir runs/alt/geniusrec --results_file runs/alt/geniusrec.json
  $PY -m train.evaluate --model runs/alt/geniusrec --dataset data/ml-1m --protocol sessions --split test --task sessions --num_beams 10 \
      --alternatives 3 --output $RES/ml-1m-geniusrec-alternative-sessions.json
  $PY -m train.evaluate --model runs/alt/geniusrec --dataset data/ml-1m --protocol sessions --split test --task sessions --num_beams 10 \
      --alternatives 3 --shared_item_penalty 2 --output $RES/ml-1m-geniusrec-alternative-sessions-penalty2.json
fi
