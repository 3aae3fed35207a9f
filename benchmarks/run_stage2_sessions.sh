#!/usr/bin/env bash
# Issue 24, deliverable 3: generated sessions on the per-position encoder of the sessions split.
#   phase A (choice, validation only): seed 42 with the set loss, then a decoding grid on the validation users;
#   phase B (after the rule picked a decoding, given as flags): seeds 43/44 trained the same way, then the test read
#   once per seed with the chosen decoding, and the 3-seed summary.
# Usage: benchmarks/run_stage2_sessions.sh A
#        benchmarks/run_stage2_sessions.sh B --decoding beam --encoder_query_weight 3 --first_step_weight 0 --popularity_penalty 0
set -euo pipefail
PY=${PY:-python}
RES=benchmarks/results
ENC=runs/ml-1m-hstu-position-sessions
RECIPE="--config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --protocol sessions --encoder_path $ENC --session_set_loss_weight 3 --num_train_epochs 12 --evaluate_test false"
phase=${1:?phase A or B}; shift
if [ "$phase" = A ]; then
  $PY -m train.finetune $RECIPE --seed 42 --output_dir runs/s24/set3-42 --results_file $RES/ml-1m-sessions-position-set3-seed42-train.json
  $PY -m benchmarks.session_decodings --dataset data/ml-1m --models runs/s24/set3-42 --stage1_baseline $ENC \
      --grid "first_step:w=0:beta=0,3:alpha=0" --grid "beam:w=0,2:beta=0,2,3:alpha=0,0.1" \
      --output $RES/ml-1m-sessions-position-decodings-validation.jsonl
else
  for seed in 43 44; do
    $PY -m train.finetune $RECIPE --seed $seed --output_dir runs/s24/set3-$seed --results_file $RES/ml-1m-sessions-position-set3-seed$seed-train.json
  done
  for seed in 42 43 44; do
    $PY -m train.evaluate --model runs/s24/set3-$seed --dataset data/ml-1m --protocol sessions --split test --task sessions --num_beams 10 \
        --stage1_baseline $ENC "$@" --output $RES/ml-1m-geniusrec-sessions-seed$seed.json
  done
  $PY -m benchmarks.sessions_vs_list --seeds $RES/ml-1m-geniusrec-sessions-seed{42,43,44}.json --output $RES/ml-1m-geniusrec.json
fi
