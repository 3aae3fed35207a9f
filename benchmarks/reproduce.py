"""One way to reproduce every number: a registry of recipes, each the exact commands behind a README "Results" row
or a BENCHMARKS.md table, in the order they ran (the former `benchmarks/run_*.sh` logs live here now).

    python -m benchmarks.reproduce --list                      # every recipe, one a line: name, what it reproduces
    python -m benchmarks.reproduce stage1-annealed --dry_run   # print its commands
    python -m benchmarks.reproduce stage1-annealed             # run them, one after another (stop at the first failure)
    python -m benchmarks.reproduce sessions --skip_done        # skip each command whose results file already exists

Commands run without a shell (`shlex`), `python` replaced by this interpreter, from the repository root. Recipes
name the recipes they need first (`needs`); `--with_needs` runs those too. Run them alone on a 2-core machine: two
training runs at once each take more than twice as long. The outputs under `runs/` are the checkpoints later recipes
read; the results files under `benchmarks/results/` are what README and BENCHMARKS.md cite.
"""

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

from .reproduce_recipes import more_recipes  # the content, speed, scale and history recipes, kept apart for size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = "benchmarks/results"
SEEDS = (42, 43, 44)
ENC = "runs/ml-1m-hstu-position"
S2 = f"--config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path {ENC}"
SESSION_ENC = "runs/ml-1m-hstu-position-sessions"
SESSION_TEST = (f"--dataset data/ml-1m --protocol sessions --split test --task sessions --num_beams 10 --stage1_baseline {SESSION_ENC}")


@dataclass
class Recipe:
    """What a recipe reproduces (`summary`), its commands in order, the recipes whose outputs it reads (`needs`)."""

    summary: str
    commands: list[str]
    needs: list[str] = field(default_factory=list)


def each_seed(template: str, seeds=SEEDS) -> list[str]:
    return [template.format(seed=seed) for seed in seeds]


def seed_files(pattern: str) -> str:
    return " ".join(f"{RES}/{pattern.format(seed=seed)}" for seed in SEEDS)


def stage1(name: str, extra: str = "", config: str = "ml-1m-hstu", results: str | None = None) -> str:
    """`train.pretrain` on ML-1M into `runs/<name>`, results in `benchmarks/results/<results or name>.json`."""
    return " ".join(["python -m train.pretrain", f"--config train/configs/{config}.json --dataset data/ml-1m", *([extra] if extra else []),
                     f"--output_dir runs/{name} --results_file {RES}/{results or name}.json"])


def dpo_frontier() -> list[str]:
    """The issue-28 frontier: pairs from the train view of 2,000 seeded users, knobs and DPO scored on the validation
    view of the others, then `choose` reads the test once (formerly benchmarks/run_dpo_frontier.sh)."""
    model, val = "runs/s24/set3-fixed10-42", f"{RES}/ml-1m-dpo-frontier-validation.jsonl"
    common = f"--model {model} --dataset data/ml-1m --exclude_users runs/pairs/s28-nov2-div3"
    pairs_base = (f"python -m train.build_preference_pairs --model {model} --dataset data/ml-1m --protocol sessions --holdout_length 10 "
                  "--num_users 2000 --num_candidates 8 --num_sampled 4 --first_step_weight 1 --encoder_query_weight 2 --quiet")
    pairs = {"s28-nov2-div3": "--w_novelty 2 --w_diversity 3", "s28-default": "",
             "s28-gated": "--w_novelty 2 --w_diversity 3 --min_chosen_accuracy 0.1",
             "s28-ranked": "--w_novelty 2 --w_diversity 3 --pairs_per_user 3",
             "s28-gated-ranked": "--w_novelty 2 --w_diversity 3 --min_chosen_accuracy 0.1 --pairs_per_user 3"}
    rpo = "--loss_type sigmoid sft --loss_weights 1.0 1.0"
    runs = [("nov2-div3-lr5e-4-b0.3", "s28-nov2-div3", "--learning_rate 5e-4 --beta 0.3"),
            ("nov2-div3-lr1e-4-b0.3", "s28-nov2-div3", "--learning_rate 1e-4 --beta 0.3"),
            ("nov2-div3-lr1e-4-b1.0", "s28-nov2-div3", "--learning_rate 1e-4 --beta 1.0"),
            ("nov2-div3-lr1e-4-b0.3-rpo1", "s28-nov2-div3", f"--learning_rate 1e-4 --beta 0.3 {rpo}"),
            ("gated-lr1e-4-b0.3", "s28-gated", "--learning_rate 1e-4 --beta 0.3"),
            ("gated-lr1e-4-b0.3-rpo1", "s28-gated", f"--learning_rate 1e-4 --beta 0.3 {rpo}"),
            ("ranked-lr1e-4-b0.3", "s28-ranked", "--learning_rate 1e-4 --beta 0.3"),
            ("gated-ranked-lr1e-4-b0.3-rpo1", "s28-gated-ranked", f"--learning_rate 1e-4 --beta 0.3 {rpo}"),
            ("nov2-div3-lr2e-5-b0.3", "s28-nov2-div3", "--learning_rate 2e-5 --beta 0.3"),
            ("gated-lr1e-4-b0.3-r32", "s28-gated", "--learning_rate 1e-4 --beta 0.3 --lora_r 32 --lora_alpha 64"),
            ("default-lr1e-4-b0.3", "s28-default", "--learning_rate 1e-4 --beta 0.3")]
    pairs2 = {"s28-nov5-pop2": "--w_novelty 5 --w_diversity 3 --w_popularity 2 --num_sampled 8",
              "s28-nov5-pop2-gated-ranked": "--w_novelty 5 --w_diversity 3 --w_popularity 2 --num_sampled 8 --min_chosen_accuracy 0.1 "
                                            "--pairs_per_user 3"}
    runs2 = [("nov5-pop2-lr5e-4-b0.3-rpo1", "s28-nov5-pop2", f"--learning_rate 5e-4 --beta 0.3 {rpo}"),
             ("nov5-pop2-lr5e-4-b0.3-rpo1-3ep", "s28-nov5-pop2", f"--learning_rate 5e-4 --beta 0.3 {rpo} --num_train_epochs 3"),
             ("nov5-pop2-lr5e-4-b0.3-rpo1-encoder", "s28-nov5-pop2",
              f"--learning_rate 5e-4 --beta 0.3 {rpo} --lora_target_modules q_proj,k_proj,v_proj,o_proj,output_projection,uvqk"),
             ("nov5-gated-ranked-lr5e-4-b0.3-rpo1", "s28-nov5-pop2-gated-ranked", f"--learning_rate 5e-4 --beta 0.3 {rpo}"),
             ("nov2-div3-lr5e-4-b0.1-rpo1", "s28-nov2-div3", f"--learning_rate 5e-4 --beta 0.1 {rpo}"),
             ("nov5-gated-ranked-lr1e-3-b0.3-rpo1", "s28-nov5-pop2-gated-ranked", f"--learning_rate 1e-3 --beta 0.3 {rpo}"),
             ("nov5-pop2-lr5e-4-b1.0", "s28-nov5-pop2", "--learning_rate 5e-4 --beta 1.0"),
             ("nov5-gated-ranked-full-lr1e-4-b0.3-rpo1", "s28-nov5-pop2-gated-ranked", f"--use_peft false --learning_rate 1e-4 --beta 0.3 {rpo}")]

    def dpo(name, setting, flags):
        args = shlex.quote(f"--use_peft true --num_train_epochs 1 {flags}")
        return f"python -m benchmarks.dpo_frontier dpo {common} --name {name} --pairs runs/pairs/{setting} --dpo_args {args} --output {val}"

    return ([f"{pairs_base} --out runs/pairs/{name} {flags}".rstrip() for name, flags in pairs.items()]
            + [f"python -m benchmarks.dpo_frontier knobs {common} --output {val}"] + [dpo(*run) for run in runs]
            + [f"{pairs_base} --out runs/pairs/{name} {flags}" for name, flags in pairs2.items()] + [dpo(*run) for run in runs2]
            + [f"python -m benchmarks.dpo_frontier choose {common} --validation {val} --output {RES}/ml-1m-geniusrec-dpo.json"])


def session_variants() -> list[str]:
    """Issue 24 phase A: training variants of the session decoder (seed 42, validation only), then decoding grids on the
    validation users (formerly benchmarks/run_stage2_sessions.sh A)."""
    base = f"python -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --protocol sessions --encoder_path {SESSION_ENC} --evaluate_test false"
    fixed = "--load_best_model_at_end false --early_stopping_patience 100"
    variants = {"set3": "--session_set_loss_weight 3 --num_train_epochs 12", "set3-fixed10": f"--session_set_loss_weight 3 --num_train_epochs 10 {fixed}",
                "set3-nil1": "--session_set_loss_weight 3 --num_train_epochs 12 --next_item_loss_weight 1",
                "set3-fixed20": f"--session_set_loss_weight 3 --num_train_epochs 20 {fixed}",
                "set5-fixed10": f"--session_set_loss_weight 5 --num_train_epochs 10 {fixed}"}
    grid = f"{RES}/ml-1m-sessions-position-decodings-validation.jsonl"
    decode = f"python -m benchmarks.session_decodings --dataset data/ml-1m --stage1_baseline {SESSION_ENC} --output {grid} --models"
    return ([f"{base} {flags} --seed 42 --output_dir runs/s24/{name}-42 --results_file {RES}/ml-1m-sessions-position-{name}-seed42-train.json"
             for name, flags in variants.items()]
            + [f"{decode} runs/s24/set3-42 --grid first_step:w=0:beta=0,3:alpha=0 --grid beam:w=0,2:beta=0,2,3:alpha=0,0.1",
               f"{decode} runs/s24/set3-fixed10-42 runs/s24/set3-nil1-42 --grid first_step:w=0:beta=0:alpha=0 --grid beam:w=0,1,2:beta=0,1,2:alpha=0",
               f"{decode} runs/s24/set3-42 --grid beam:w=1:beta=0,1,2:alpha=0 --grid beam:w=0,2:beta=1:alpha=0",
               f"{decode} runs/s24/set3-fixed20-42 runs/s24/set5-fixed10-42 --grid first_step:w=0:beta=0:alpha=0 --grid beam:w=1,2:beta=1,2:alpha=0,0.1",
               f"{decode} runs/s24/set3-fixed10-42 --grid beam:w=1,2:beta=1,2:alpha=0.1"])


RECIPES: dict[str, Recipe] = {
    "data": Recipe("MovieLens-1M, offline, into data/ml-1m (every ML-1M recipe reads it)",
                   ["python -m data_scripts.movielens --variant ml-1m --out data/ml-1m"]),
    "quickstart": Recipe("README Results 'make quickstart': the whole quick start in a fresh work folder, timed",
                         [f"python -m benchmarks.quickstart_time --output {RES}/quickstart-time.json"]),
    "stage1-position": Recipe("README next item: HSTU 2x50, 128 sampled negatives per position, batch 128 (one run)",
                              [stage1("ml-1m-hstu-position")], ["data"]),
    "stage1-cpu-fast": Recipe("BENCHMARKS stage 1: the same at batch 16 (one run; time to quality)",
                              [stage1("ml-1m-hstu-cpu-fast", config="ml-1m-hstu-cpu-fast")], ["data"]),
    "stage1-annealed": Recipe(
        "README next item: the per-position HSTU, then 8 epochs at lr 1e-4 (3 seeds), against the one-phase run",
        each_seed(f"python -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m --init_from {ENC} --learning_rate 1e-4 "
                  "--num_train_epochs 8 --early_stopping_patience 3 --seed {seed} --output_dir runs/s2/control-{seed} "
                  f"--results_file {RES}/ml-1m-stage2-control-encoder-lr1e-4-seed{{seed}}.json")
        + [f"python -m benchmarks.stage2_vs_encoder --label encoder+8ep --encoder {RES}/ml-1m-hstu-position.json "
           f"--seeds {seed_files('ml-1m-stage2-control-encoder-lr1e-4-seed{seed}.json')} --output {RES}/ml-1m-stage2-control-vs-encoder.json"],
        ["stage1-position"]),
    "stage1-gpu": Recipe("README next item / speed: HSTU and HSTU-large on one GPU (installs carried wheels; run on the GPU machine)",
                         [f"benchmarks/gpu_ml1m.sh --output {RES}/gpu-ml1m.json"]),
    "sasrec": Recipe("README next item: SASRec 2x50, full softmax, tuned on validation (one run)",
                     [stage1("ml-1m-sasrec-full", config="ml-1m-sasrec-full", results="ml-1m-sasrec")],
                     ["data"]),
    "time-to-quality": Recipe(
        "README speed: training seconds to validation NDCG@10 .1893 on 2 cores, from the stage-1 results files",
        [f"python -m benchmarks.time_to_quality --runs {RES}/ml-1m-hstu-position.json {RES}/s30-ablation-b128-lr1e-3.json "
         f"{RES}/ml-1m-hstu-cpu-fast.json --labels 'per-position recipe, batch 128 (2026-12-05, shared cores)' "
         "'batch 128, alone (first 150 s)' 'batch 16 (this change, alone)' --target 0.1893 "
         f"--output {RES}/ml-1m-cpu-time-to-quality.json"], ["stage1-position", "stage1-cpu-fast"]),
    "stage2-variants": Recipe(
        "BENCHMARKS stage 2 next item: the decoder variants on the per-position encoder (seed 42, validation only)",
        [f"python -m train.finetune {S2} --evaluate_test false --output_dir runs/s2/frozen-42 --results_file {RES}/ml-1m-stage2-frozen-seed42.json",
         f"python -m train.finetune {S2} --freeze_encoder false --encoder_learning_rate 1e-4 --encoder_loss_weight 1 --evaluate_test false "
         f"--output_dir runs/s2/joint-lr1e-4-42 --results_file {RES}/ml-1m-stage2-joint-lr1e-4-seed42.json",
         f"python -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m --init_from {ENC} --learning_rate 1e-4 "
         "--num_train_epochs 8 --early_stopping_patience 3 --evaluate_test false --output_dir runs/s2/encoder-lr1e-4-42 "
         f"--results_file {RES}/ml-1m-stage2-encoder-continued-lr1e-4-seed42.json",
         f"python -m train.finetune {S2} --evaluate_test false --freeze_encoder false --encoder_learning_rate 1e-4 --encoder_loss_weight 1 "
         f"--next_item_loss_weight 100 --output_dir runs/s2/joint-next-only-42 --results_file {RES}/ml-1m-stage2-joint-lr1e-4-next-only-seed42.json"],
        ["stage1-position"]),
    "stage2-next-item": Recipe(
        "README next item: the chosen decoder (frozen encoder, first step carries the loss), 3 seeds, against its encoder",
        each_seed(f"python -m train.finetune {S2} --next_item_loss_weight 100 --seed {{seed}} --output_dir runs/s2/chosen-{{seed}} "
                  f"--results_file {RES}/ml-1m-stage2-chosen-seed{{seed}}.json")
        + [f"python -m benchmarks.stage2_vs_encoder --encoder {RES}/ml-1m-hstu-position.json --seeds {seed_files('ml-1m-stage2-chosen-seed{seed}.json')} "
           f"--output {RES}/ml-1m-stage2-vs-encoder.json"], ["stage1-position"]),
    "stage2-annealed": Recipe(
        "BENCHMARKS stage 2 next item: the chosen decoder on the low-rate-phase encoder (seed 42 of stage1-annealed), 3 seeds",
        each_seed("python -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path runs/s2/control-42 "
                  "--next_item_loss_weight 100 --seed {seed} --output_dir runs/s2/annealed-chosen-{seed} "
                  f"--results_file {RES}/ml-1m-stage2-annealed-encoder-chosen-seed{{seed}}.json")
        + [f"python -m benchmarks.stage2_vs_encoder --encoder {RES}/ml-1m-stage2-control-encoder-lr1e-4-seed42.json "
           f"--seeds {seed_files('ml-1m-stage2-annealed-encoder-chosen-seed{seed}.json')} --output {RES}/ml-1m-stage2-vs-annealed-encoder.json"],
        ["stage1-annealed"]),
    "sessions-encoder": Recipe("BENCHMARKS sessions: the per-position HSTU on the sessions split (the list baseline and the encoder)",
                               [stage1("ml-1m-hstu-position-sessions", "--protocol sessions")], ["data"]),
    "sessions-variants": Recipe("BENCHMARKS sessions: decoder training variants and decoding grids on validation (seed 42)",
                                session_variants(), ["sessions-encoder"]),
    "sessions": Recipe(
        "README sessions: the chosen session decoder (multi-label loss x3, 10 epochs) over 3 seeds, test read once per seed, vs the list",
        each_seed(f"python -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --protocol sessions --encoder_path {SESSION_ENC} "
                  "--evaluate_test false --session_set_loss_weight 3 --num_train_epochs 10 --load_best_model_at_end false --early_stopping_patience 100 "
                  "--disable_tqdm true --seed {seed} --output_dir runs/s24/set3-fixed10-{seed} "
                  f"--results_file {RES}/ml-1m-sessions-position-set3-fixed10-seed{{seed}}-train.json", (43, 44))
        + each_seed(f"python -m train.evaluate --model runs/s24/set3-fixed10-{{seed}} {SESSION_TEST} --decoding beam --first_step_weight 1 "
                    f"--encoder_query_weight 2 --popularity_penalty 0 --output {RES}/ml-1m-geniusrec-sessions-seed{{seed}}.json")
        + [f"python -m benchmarks.sessions_vs_list --seeds {seed_files('ml-1m-geniusrec-sessions-seed{seed}.json')} --output {RES}/ml-1m-geniusrec.json"],
        ["sessions-variants"]),
    "alternatives": Recipe(
        "README sessions: three sessions sharing no item (quick-start size, sessions split, test once)",
        ["python -m train.pretrain --config train/configs/quickstart.json --dataset data/ml-1m --protocol sessions --output_dir runs/alt/hstu "
         "--results_file runs/alt/hstu.json",
         "python -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --protocol sessions --encoder_path runs/alt/hstu "
         "--max_length 100 --num_train_epochs 3 --evaluate_test false --output_dir runs/alt/geniusrec --results_file runs/alt/geniusrec.json",
         f"python -m train.evaluate --model runs/alt/geniusrec {SESSION_TEST.replace(f' --stage1_baseline {SESSION_ENC}', '')} --alternatives 3 "
         f"--output {RES}/ml-1m-geniusrec-alternative-sessions.json",
         f"python -m train.evaluate --model runs/alt/geniusrec {SESSION_TEST.replace(f' --stage1_baseline {SESSION_ENC}', '')} --alternatives 3 "
         f"--shared_item_penalty 2 --output {RES}/ml-1m-geniusrec-alternative-sessions-penalty2.json"], ["data"]),
    "dpo": Recipe("README diversity: DPO (+ LoRA) against decoding-time knobs, chosen on validation users, test once", dpo_frontier(),
                  ["sessions"]),
    **more_recipes(Recipe, RES, S2, ENC),
}


def run(name: str, dry_run: bool, skip_done: bool, with_needs: bool, seen=None) -> int:
    seen = set() if seen is None else seen
    recipe = RECIPES[name]
    if with_needs:
        for need in recipe.needs:
            if need not in seen and (code := run(need, dry_run, skip_done, with_needs, seen)):
                return code
    seen.add(name)
    print(f"# {name}: {recipe.summary}" + (f" (needs: {', '.join(recipe.needs)})" if recipe.needs else ""), flush=True)
    for command in recipe.commands:
        words = shlex.split(command)
        output = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--results_file", "--output", "--out")), None)
        if skip_done and output and os.path.exists(os.path.join(ROOT, output)) and not output.endswith(".jsonl"):
            print(f"# done already ({output}): {command}", flush=True)
            continue
        print(command, flush=True)
        if dry_run:
            continue
        argv = [sys.executable, *words[1:]] if words[0] == "python" else words
        start = time.time()
        code = subprocess.call(argv, cwd=ROOT)
        print(f"# exit {code} after {time.time() - start:.0f} s", flush=True)
        if code:
            return code
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="recipes to run (or print, with --dry_run), in this order")
    parser.add_argument("--list", action="store_true", help="name every recipe, one a line, with what it reproduces")
    parser.add_argument("--dry_run", action="store_true", help="print the commands instead of running them")
    parser.add_argument("--skip_done", action="store_true", help="skip each command whose --results_file / --output / --out exists")
    parser.add_argument("--with_needs", action="store_true", help="run the recipes a recipe needs first (each once)")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        width = max(map(len, RECIPES))
        print("\n".join(f"{name:<{width}}  {recipe.summary}" for name, recipe in RECIPES.items()))
        return 0
    unknown = [name for name in args.names if name not in RECIPES]
    if unknown:
        parser.error(f"no recipe named {', '.join(unknown)}; `python -m benchmarks.reproduce --list` names them")
    seen: set = set()
    for name in args.names:
        if code := run(name, args.dry_run, args.skip_done, args.with_needs, seen):
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
