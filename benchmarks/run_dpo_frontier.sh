#!/usr/bin/env bash
# Issue 28: DPO against decoding-time knobs, on the strongest stage 2 (runs/s24/set3-fixed10-42, sessions protocol,
# chosen decoding: beam 10, first-step mix 1, encoder query 2). Every pairs setting comes from the train view of the
# same 2,000 seeded users (--seed 42); all scoring is on the validation view of the other users, then `choose` reads
# the test view once. Usage: benchmarks/run_dpo_frontier.sh [pairs|knobs|dpo|pairs2|dpo2|choose]... (default: all in order)
set -euo pipefail
PY=${PY:-python}
MODEL=${MODEL:-runs/s24/set3-fixed10-42}
VAL=benchmarks/results/ml-1m-dpo-frontier-validation.jsonl
P=runs/pairs
COMMON="--model $MODEL --dataset data/ml-1m --exclude_users $P/s28-nov2-div3"
pairs() {  # name, then build_preference_pairs flags
  name=$1; shift
  [ -e $P/$name/pairs_config.json ] || $PY -m train.build_preference_pairs --model $MODEL --dataset data/ml-1m --protocol sessions \
      --holdout_length 10 --num_users 2000 --num_candidates 8 --num_sampled 4 --first_step_weight 1 --encoder_query_weight 2 \
      --quiet --out $P/$name "$@"
}
dpo() {  # name, pairs setting, train.dpo flags
  name=$1; pairs=$2; shift 2
  grep -q "\"name\": \"$name\"" $VAL 2>/dev/null || \
    $PY -m benchmarks.dpo_frontier dpo $COMMON --name $name --pairs $P/$pairs --dpo_args "--use_peft true --num_train_epochs 1 $*" --output $VAL
}
for phase in ${@:-pairs knobs dpo pairs2 dpo2 choose}; do
  case $phase in
  pairs)
    pairs s28-nov2-div3 --w_novelty 2 --w_diversity 3
    pairs s28-default
    pairs s28-gated --w_novelty 2 --w_diversity 3 --min_chosen_accuracy 0.1
    pairs s28-ranked --w_novelty 2 --w_diversity 3 --pairs_per_user 3
    pairs s28-gated-ranked --w_novelty 2 --w_diversity 3 --min_chosen_accuracy 0.1 --pairs_per_user 3 ;;
  knobs)
    $PY -m benchmarks.dpo_frontier knobs $COMMON --output $VAL ;;
  dpo)
    dpo nov2-div3-lr5e-4-b0.3 s28-nov2-div3 --learning_rate 5e-4 --beta 0.3     # the former recipe
    dpo nov2-div3-lr1e-4-b0.3 s28-nov2-div3 --learning_rate 1e-4 --beta 0.3
    dpo nov2-div3-lr1e-4-b1.0 s28-nov2-div3 --learning_rate 1e-4 --beta 1.0
    dpo nov2-div3-lr1e-4-b0.3-rpo1 s28-nov2-div3 --learning_rate 1e-4 --beta 0.3 --loss_type sigmoid sft --loss_weights 1.0 1.0
    dpo gated-lr1e-4-b0.3 s28-gated --learning_rate 1e-4 --beta 0.3
    dpo gated-lr1e-4-b0.3-rpo1 s28-gated --learning_rate 1e-4 --beta 0.3 --loss_type sigmoid sft --loss_weights 1.0 1.0
    dpo ranked-lr1e-4-b0.3 s28-ranked --learning_rate 1e-4 --beta 0.3
    dpo gated-ranked-lr1e-4-b0.3-rpo1 s28-gated-ranked --learning_rate 1e-4 --beta 0.3 --loss_type sigmoid sft --loss_weights 1.0 1.0
    dpo nov2-div3-lr2e-5-b0.3 s28-nov2-div3 --learning_rate 2e-5 --beta 0.3
    dpo gated-lr1e-4-b0.3-r32 s28-gated --learning_rate 1e-4 --beta 0.3 --lora_r 32 --lora_alpha 64
    dpo default-lr1e-4-b0.3 s28-default --learning_rate 1e-4 --beta 0.3 ;;
  pairs2)  # second round, after the first showed little novelty movement: novelty and popularity weighted up, more samples
    pairs s28-nov5-pop2 --w_novelty 5 --w_diversity 3 --w_popularity 2 --num_sampled 8
    pairs s28-nov5-pop2-gated-ranked --w_novelty 5 --w_diversity 3 --w_popularity 2 --num_sampled 8 --min_chosen_accuracy 0.1 --pairs_per_user 3 ;;
  dpo2)
    RPO="--loss_type sigmoid sft --loss_weights 1.0 1.0"
    dpo nov5-pop2-lr5e-4-b0.3-rpo1 s28-nov5-pop2 --learning_rate 5e-4 --beta 0.3 $RPO
    dpo nov5-pop2-lr5e-4-b0.3-rpo1-3ep s28-nov5-pop2 --learning_rate 5e-4 --beta 0.3 $RPO --num_train_epochs 3
    dpo nov5-pop2-lr5e-4-b0.3-rpo1-encoder s28-nov5-pop2 --learning_rate 5e-4 --beta 0.3 $RPO \
        --lora_target_modules q_proj,k_proj,v_proj,o_proj,output_projection,uvqk
    dpo nov5-gated-ranked-lr5e-4-b0.3-rpo1 s28-nov5-pop2-gated-ranked --learning_rate 5e-4 --beta 0.3 $RPO
    dpo nov2-div3-lr5e-4-b0.1-rpo1 s28-nov2-div3 --learning_rate 5e-4 --beta 0.1 $RPO
    dpo nov5-gated-ranked-lr1e-3-b0.3-rpo1 s28-nov5-pop2-gated-ranked --learning_rate 1e-3 --beta 0.3 $RPO
    dpo nov5-pop2-lr5e-4-b1.0 s28-nov5-pop2 --learning_rate 5e-4 --beta 1.0
    dpo nov5-gated-ranked-full-lr1e-4-b0.3-rpo1 s28-nov5-pop2-gated-ranked --use_peft false --learning_rate 1e-4 --beta 0.3 $RPO ;;
  choose)
    $PY -m benchmarks.dpo_frontier choose $COMMON --validation $VAL --output benchmarks/results/ml-1m-geniusrec-dpo.json ;;
  esac
done
