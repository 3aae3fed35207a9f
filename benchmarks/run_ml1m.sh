#!/usr/bin/env bash
# The MovieLens-1M benchmark runs behind BENCHMARKS.md, in order. Each writes benchmarks/results/<name>.json.
# On the 2-core CPU these take hours: run them in the background (each line is independent once its inputs exist).
set -euo pipefail
PY=${PY:-python}
$PY -m data_scripts.movielens --variant ml-1m --out data/ml-1m
$PY -m data_scripts.embed --dataset data/ml-1m --text_model minilm --output_name text-minilm.safetensors
$PY -m data_scripts.embed --dataset data/ml-1m --text_model smollm2 --output_name text-smollm2.safetensors
# stage 1 (leave-one-out) and the SASRec baseline
$PY -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m --output_dir runs/ml-1m-hstu --results_file benchmarks/results/ml-1m-hstu.json
$PY -m train.pretrain --config train/configs/ml-1m-sasrec.json --dataset data/ml-1m --output_dir runs/ml-1m-sasrec --results_file benchmarks/results/ml-1m-sasrec.json
$PY -m train.pretrain --config train/configs/ml-1m-hstu-large.json --dataset data/ml-1m --output_dir runs/ml-1m-hstu-large --results_file benchmarks/results/ml-1m-hstu-large.json
# stage 1 on the sessions split (the session table's HSTU baseline and GeniusRec's encoder there)
$PY -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m --protocol sessions --num_train_epochs 40 --output_dir runs/ml-1m-hstu-sessions --results_file benchmarks/results/ml-1m-hstu-sessions.json
# stage 2, next-item table (leave-one-out), with and without text embeddings
# (the ML-1M run of 2026-11-28 was stopped at epoch 35; its best checkpoint was copied to runs/ml-1m-hstu-best)
GR="--config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path runs/ml-1m-hstu-best"
$PY -m train.finetune $GR --output_dir runs/ml-1m-geniusrec-no-text --results_file benchmarks/results/ml-1m-geniusrec-no-text.json
$PY -m train.finetune $GR --use_text_embeddings true --text_embeddings text-minilm.safetensors --output_dir runs/ml-1m-geniusrec-text-minilm --results_file benchmarks/results/ml-1m-geniusrec-text-minilm.json
$PY -m train.finetune $GR --use_text_embeddings true --text_embeddings text-smollm2.safetensors --output_dir runs/ml-1m-geniusrec-text-smollm2 --results_file benchmarks/results/ml-1m-geniusrec-text-smollm2.json
# stage 2, session table (leave-k-out, k=10): GeniusRec vs the stage-1 top-10 list and popularity
$PY -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --protocol sessions --encoder_path runs/ml-1m-hstu-sessions \
    --stage1_baseline runs/ml-1m-hstu-sessions \
    --output_dir runs/ml-1m-geniusrec-sessions --results_file benchmarks/results/ml-1m-geniusrec.json
# stage 3: DPO toward novelty and diversity
$PY -m train.build_preference_pairs --model runs/ml-1m-geniusrec-no-text --dataset data/ml-1m --out data/ml-1m-pairs-nov2-div3 --num_users 2000 --num_candidates 8 --num_sampled 4 --w_novelty 2 --w_diversity 3
$PY benchmarks/dpo_tradeoff.py --model runs/ml-1m-geniusrec-no-text --pairs data/ml-1m-pairs-nov2-div3 --dataset data/ml-1m --betas 0.5 0.3 --max_users 2000 --work_dir runs/dpo-sweep-nd --output benchmarks/results/ml-1m-geniusrec-dpo-nov2-div3.json
# (the default weights, --w_diversity 3 alone: ml-1m-geniusrec-dpo-default-weights.json, ml-1m-geniusrec-dpo-div3.json)
# generation speed (quiet machine)
$PY benchmarks/generation_speed.py --dataset data/ml-1m --batch_size 256 --num_beams 10 --session_length 10 --output benchmarks/results/generation-speed.jsonl
