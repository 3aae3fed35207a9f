#!/usr/bin/env bash
# Issue 24, deliverable 3: generated sessions on the per-position encoder of the sessions split
# (runs/ml-1m-hstu-position-sessions: `python -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m
#  --protocol sessions --output_dir runs/ml-1m-hstu-position-sessions --results_file benchmarks/results/ml-1m-hstu-position-sessions.json`).
#   phase A (choice, validation users only): the training variants on seed 42, then decoding grids on the validation users
#            (benchmarks/results/ml-1m-sessions-position-decodings-validation.jsonl, one line per point);
#   phase B (after the rule picked a variant and a decoding): seeds 43/44 trained the same way, the test read once per
#            seed with the chosen decoding, and the 3-seed summary benchmarks/results/ml-1m-geniusrec.json.
# Usage: benchmarks/run_stage2_sessions.sh A
#        TRAIN="<the chosen variant's flags>" benchmarks/run_stage2_sessions.sh B <run name> <decoding flags of train.evaluate>
set -euo pipefail
PY=${PY:-python}
RES=benchmarks/results
ENC=runs/ml-1m-hstu-position-sessions
BASE="--config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --protocol sessions --encoder_path $ENC --evaluate_test false"
FIXED="--load_best_model_at_end false --early_stopping_patience 100"  # the last epoch, not the best next-item epoch
GRID=$RES/ml-1m-sessions-position-decodings-validation.jsonl
phase=${1:?phase A or B}; shift
if [ "$phase" = A ]; then
  train() { name=$1; shift; $PY -m train.finetune $BASE --seed 42 "$@" --output_dir runs/s24/$name-42 --results_file $RES/ml-1m-sessions-position-$name-seed42-train.json; }
  train set3 --session_set_loss_weight 3 --num_train_epochs 12                      # early stopping on next-item NDCG (patience 3)
  train set3-fixed10 --session_set_loss_weight 3 --num_train_epochs 10 $FIXED
  train set3-nil1 --session_set_loss_weight 3 --num_train_epochs 12 --next_item_loss_weight 1
  train set3-fixed20 --session_set_loss_weight 3 --num_train_epochs 20 $FIXED
  train set5-fixed10 --session_set_loss_weight 5 --num_train_epochs 10 $FIXED
  decode() { $PY -m benchmarks.session_decodings --dataset data/ml-1m --stage1_baseline $ENC --output $GRID --models "$@"; }
  decode runs/s24/set3-42 --grid "first_step:w=0:beta=0,3:alpha=0" --grid "beam:w=0,2:beta=0,2,3:alpha=0,0.1"
  decode runs/s24/set3-fixed10-42 runs/s24/set3-nil1-42 --grid "first_step:w=0:beta=0:alpha=0" --grid "beam:w=0,1,2:beta=0,1,2:alpha=0"
  decode runs/s24/set3-42 --grid "beam:w=1:beta=0,1,2:alpha=0" --grid "beam:w=0,2:beta=1:alpha=0"
  decode runs/s24/set3-fixed20-42 runs/s24/set5-fixed10-42 --grid "first_step:w=0:beta=0:alpha=0" --grid "beam:w=1,2:beta=1,2:alpha=0,0.1"
  decode runs/s24/set3-fixed10-42 --grid "beam:w=1,2:beta=1,2:alpha=0.1"
else
  name=${1:?run name of the chosen variant}; shift
  for seed in 43 44; do
    $PY -m train.finetune $BASE $TRAIN --seed $seed --output_dir runs/s24/$name-$seed --results_file $RES/ml-1m-sessions-position-$name-seed$seed-train.json
  done
  for seed in 42 43 44; do
    $PY -m train.evaluate --model runs/s24/$name-$seed --dataset data/ml-1m --protocol sessions --split test --task sessions --num_beams 10 \
        --stage1_baseline $ENC "$@" --output $RES/ml-1m-geniusrec-sessions-seed$seed.json
  done
  $PY -m benchmarks.sessions_vs_list --seeds $RES/ml-1m-geniusrec-sessions-seed{42,43,44}.json --output $RES/ml-1m-geniusrec.json
  for seed in 42 43 44; do  # the reference row: the first step read as a list (not a generated session)
    $PY -m train.evaluate --model runs/s24/$name-$seed --dataset data/ml-1m --protocol sessions --split test --task sessions --num_beams 10 \
        --stage1_baseline $ENC --decoding first_step --output $RES/ml-1m-geniusrec-sessions-first-step-seed$seed.json
  done
  $PY -m benchmarks.sessions_vs_list --seeds $RES/ml-1m-geniusrec-sessions-first-step-seed{42,43,44}.json \
      --output $RES/ml-1m-geniusrec-sessions-first-step.json
fi
