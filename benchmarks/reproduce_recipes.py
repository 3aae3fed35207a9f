"""The content, speed, scale and history recipes of `benchmarks.reproduce` (kept apart only for file size)."""

SEEDS = (42, 43, 44)


def seed_files(RES: str, pattern: str) -> str:
    return " ".join(f"{RES}/{pattern.format(seed=s)}" for s in SEEDS)


def more_recipes(Recipe, RES: str, S2: str, ENC: str) -> dict:
    """The content recipes and the speed, scale and history ones, in that order."""
    return {**content_recipes(Recipe, RES, S2), **other_recipes(Recipe, RES), **issue42_recipes(Recipe, RES)}


def content_recipes(Recipe, RES: str, S2: str) -> dict:
    text = "--use_text_embeddings true --text_embeddings text-minilm.safetensors"
    b16 = ("--config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path runs/ml-1m-hstu-cpu-fast "
           "--next_item_loss_weight 100 --learning_rate 0.0002")
    recipe = f"{S2} --next_item_loss_weight 100"
    budget_text = "--text_embeddings text-smollm2.safetensors --content_adapter mlp"

    def files(pattern):
        return seed_files(RES, pattern)

    def finetune(flags, name, seed=42, results=None):
        return (f"python -m train.finetune {flags} --seed {seed} --output_dir runs/s27/{name} "
                f"--results_file {RES}/{results or 'ml-1m-' + name}.json")

    cold_stage1 = ("python -m train.pretrain --config train/configs/ml-1m-hstu-cpu-fast.json --dataset data/ml-1m --protocol cold-items "
                   "--max_train_seconds 600 --text_embeddings text-minilm.safetensors --content_adapter mlp --output_dir runs/s27/cold-hstu-text-fast "
                   f"--results_file {RES}/ml-1m-cold-hstu-text-fast.json --disable_tqdm true")
    cold_stage2 = ("python -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path runs/s27/cold-hstu-text-fast "
                   f"--protocol cold-items --seed 42 {text} --output_dir runs/s27/cold-geniusrec-text-fast "
                   f"--results_file {RES}/ml-1m-cold-geniusrec-text-fast.json --disable_tqdm true")
    embed = "python -m data_scripts.embed --dataset data/ml-1m --text_model {model} --output_name text-{model}.safetensors --quiet"
    ablation = "python -m benchmarks.content_ablation --dataset data/ml-1m --epochs 10 --max_length 50 --output_prefix " + f"{RES}/ml-1m-content-ablation"
    return {
        "embeddings": Recipe("item text embeddings of ML-1M with the offline models (MiniLM, SmolLM2)",
                             [embed.format(model="minilm"), embed.format(model="smollm2")], ["data"]),
        "content-ablation": Recipe("BENCHMARKS content: embedders x preprocessing x adapter on validation (test never read)",
                                   [f"{ablation} --embedders minilm", f"{ablation} --embedders minilm --variants pca_init whiten_mlp_pca_init",
                                    f"{ablation} --embedders smollm2 --variants raw whiten whiten_mlp"], ["embeddings"]),
        "cold-items": Recipe("README new items: item cold start with MiniLM text, stage 1 (600 s) and 2, beside content kNN",
                             [cold_stage1, cold_stage2,
                              "python -m benchmarks.cold_items --dataset data/ml-1m --hstu_text runs/s27/cold-hstu-text-fast --geniusrec_text "
                              f"runs/s27/cold-geniusrec-text-fast --content_embeddings text-minilm.safetensors --output {RES}/ml-1m-cold-items.json"],
                             ["embeddings"]),
        "content-budget": Recipe(
            "BENCHMARKS content: stage 1 with and without SmolLM2 text at equal wall-clock budgets (480 s), the cold-items runs, "
            "GeniusRec with and without text over 3 seeds (formerly benchmarks/run_content.sh; outputs under runs/results)",
            [c for name, protocol, flags in (("hstu-no-text", "leave-one-out", ""), ("hstu-text", "leave-one-out", budget_text),
                                             ("cold-hstu-no-text", "cold-items", ""), ("cold-hstu-text", "cold-items", budget_text))
             for c in [f"python -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-1m --protocol {protocol} --max_train_seconds 480 "
                       f"--output_dir runs/content/{name} --results_file runs/results/ml-1m-{name}.json --disable_tqdm true {flags}".rstrip()]]
            + [f"python -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path runs/content/{encoder} "
               f"--protocol {protocol} --seed {seed} --output_dir runs/content/{name} --results_file runs/results/ml-1m-{name}.json --disable_tqdm true {flags}".rstrip()
               for name, encoder, protocol, seed, flags in
               [("cold-geniusrec-no-text", "cold-hstu-no-text", "cold-items", 42, ""),
                ("cold-geniusrec-text", "cold-hstu-text", "cold-items", 42, "--use_text_embeddings true --text_embeddings text-smollm2.safetensors")]
               + [row for s in SEEDS for row in ((f"geniusrec-no-text-seed{s}", "hstu-no-text", "leave-one-out", s, ""),
                                                 (f"geniusrec-text-seed{s}", "hstu-text", "leave-one-out", s,
                                                  "--use_text_embeddings true --text_embeddings text-smollm2.safetensors"))]]
            + ["python -m benchmarks.cold_items --dataset data/ml-1m --hstu runs/content/cold-hstu-no-text --hstu_text runs/content/cold-hstu-text "
               "--geniusrec runs/content/cold-geniusrec-no-text --geniusrec_text runs/content/cold-geniusrec-text --content_embeddings "
               "text-smollm2.safetensors --output runs/results/ml-1m-cold-items.json"],
            ["embeddings"]),
        "content-stage2": Recipe(
            "BENCHMARKS content: GeniusRec with and without MiniLM text on the per-position encoder, 3 seeds each, popularity buckets",
            [c for s in SEEDS for c in (finetune(recipe, f"no-text-{s}", s, f"ml-1m-geniusrec-no-text-seed{s}"),
                                        finetune(f"{recipe} {text}", f"text-{s}", s, f"ml-1m-geniusrec-text-seed{s}"))]
            + [f"python -m benchmarks.aggregate_seeds --output {RES}/ml-1m-geniusrec-no-text.json {files('ml-1m-geniusrec-no-text-seed{seed}.json')}",
               f"python -m benchmarks.aggregate_seeds --output {RES}/ml-1m-geniusrec-text.json {files('ml-1m-geniusrec-text-seed{seed}.json')}"]
            + [c for s in SEEDS for c in (
                finetune(f"{recipe} {text} --content_output false --learning_rate 0.0002", f"text-expert-only-lr2e-4-{s}", s,
                         f"ml-1m-geniusrec-text-expert-only-lr2e-4-seed{s}"),
                finetune(f"{recipe} --learning_rate 0.0002", f"no-text-lr2e-4-{s}", s, f"ml-1m-geniusrec-no-text-lr2e-4-seed{s}"))],
            ["stage1-position", "embeddings"]),
        "content-b16": Recipe(
            "BENCHMARKS content: the text expert on the batch-16 encoder, MiniLM and SmolLM2, 3 seeds each, paired with ID only",
            [c for s in SEEDS for c in (finetune(f"{b16} {text} --content_output false", f"b16-text-expert-only-{s}", s,
                                                 f"ml-1m-geniusrec-b16-text-expert-only-seed{s}"),
                                        finetune(b16, f"b16-no-text-{s}", s, f"ml-1m-geniusrec-b16-no-text-seed{s}"),
                                        finetune(f"{b16} --use_text_embeddings true --text_embeddings text-smollm2.safetensors --content_output false",
                                                 f"b16-smollm2-expert-only-{s}", s, f"ml-1m-geniusrec-b16-smollm2-expert-only-seed{s}"))]
            + [f"python -m benchmarks.paired_seeds --baseline {files('ml-1m-geniusrec-b16-no-text-seed{seed}.json')} --variant "
               f"{files('ml-1m-geniusrec-b16-text-expert-only-seed{seed}.json')} --output {RES}/ml-1m-geniusrec-b16-text-vs-no-text.json",
               f"python -m benchmarks.paired_seeds --baseline {files('ml-1m-geniusrec-b16-no-text-seed{seed}.json')} --variant "
               f"{files('ml-1m-geniusrec-b16-smollm2-expert-only-seed{seed}.json')} --output {RES}/ml-1m-geniusrec-b16-smollm2-vs-no-text.json"],
            ["stage1-cpu-fast", "embeddings"]),
    }


def other_recipes(Recipe, RES: str) -> dict:
    quick = "runs/quickstart"

    def files(pattern):
        return seed_files(RES, pattern)

    return {
        "stage2-ml100k": Recipe(
            "BENCHMARKS stage 2 on MovieLens-100K: the ML-1M recipe unchanged, 3 seeds (no target)",
            ["python -m data_scripts.movielens --variant ml-100k --out data/ml-100k",
             "python -m train.pretrain --config train/configs/ml-1m-hstu.json --dataset data/ml-100k --output_dir runs/ml-100k-hstu-position "
             f"--results_file {RES}/ml-100k-hstu-position.json"]
            + [f"python -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-100k --encoder_path runs/ml-100k-hstu-position "
               f"--next_item_loss_weight 100 --seed {s} --output_dir runs/ml-100k-stage2-{s} --results_file {RES}/ml-100k-stage2-seed{s}.json" for s in SEEDS]
            + [f"python -m benchmarks.stage2_vs_encoder --encoder {RES}/ml-100k-hstu-position.json --seeds {files('ml-100k-stage2-seed{seed}.json')} "
               f"--output {RES}/ml-100k-stage2-vs-encoder.json"]),
        "generation-speed": Recipe(
            "README speed: generated sessions per second, two-stage decode (candidate_count 100), 256 users x 10 beams x 10 items",
            [f"python -m benchmarks.generation_speed --dataset data/ml-1m --model runs/s24/set3-fixed10-42 --batch_size 256 --num_beams 10 "
             f"--items_per_session 10 --repeats 7 --output {RES}/generation-speed.jsonl --candidate_count 100"], ["sessions"]),
        "batch": Recipe("README speed: top-10 lists and sessions for every ML-1M user to Parquet (train.recommend)",
                        [f"python -m benchmarks.batch_recommend --dataset {quick}/data --runs hstu={quick}/hstu geniusrec={quick}/geniusrec "
                         f"geniusrec-two-stage={quick}/geniusrec:100 --output {RES}/ml-1m-batch-recommend.json"], ["quickstart-folder"]),
        "serve": Recipe("README speed: train.serve under load on loopback (HSTU; GeniusRec sessions; the exported encoder)",
                        [f"python -m benchmarks.serve_load --model {quick}/hstu --dataset {quick}/data --requests 5000 --concurrency 32 "
                         f"--batch_wait_ms 0 2 5 --output {RES}/ml-1m-serve-load-hstu.json",
                         f"python -m benchmarks.serve_load --model {quick}/geniusrec --dataset {quick}/data --requests 5000 --concurrency 32 "
                         f"--session true --batch_wait_ms 5 0 --candidate_count 100 --timeout 300 --output {RES}/ml-1m-serve-load-geniusrec.json",
                         f"python -m benchmarks.serve_load --model {quick}/hstu --dataset {quick}/data --requests 5000 --concurrency 32 "
                         f"--batch_wait_ms 2 5 --exported true --output {RES}/ml-1m-serve-load-hstu-exported.json"], ["quickstart-folder"]),
        "sessions-by-popularity": Recipe(
            "README plot: list vs session recall by target popularity bucket (quick-start models, 1,000 sampled test users)",
            [f"python -m benchmarks.sessions_by_popularity --geniusrec {quick}/geniusrec --stage1 {quick}/hstu --dataset {quick}/data "
             f"--max_users 1000 --label 'quick-start models' --output {RES}/sessions-by-popularity-quickstart.json"], ["quickstart-folder"]),
        "quickstart-folder": Recipe("the quick start's checkpoints under runs/quickstart (what the batch and serving benchmarks load)",
                                    ["python -m train.pipeline --work_dir runs/quickstart"]),
        "events-reader": Recipe("README scale: your own events, 1M / 10M / 100M synthetic rows from Parquet and CSV",
                                ["python -m benchmarks.interactions_speed --work /tmp/events --sizes 1000000 10000000 100000000 "
                                 f"--formats parquet csv --output {RES}/interactions-speed.json"]),
        "books-scale": Recipe("README scale: Amazon Books size end to end (29.5M synthetic reviews): reader, training, ranking, sessions",
                              [f"python -m benchmarks.books_scale --work /work/books --rows 29500000 --output {RES}/books-scale.json"]),
        "history-ml1m": Recipe(
            "docs/history.md: the first MovieLens-1M chain (batch-shared negatives encoder, sessions17, the DPO sweep), superseded rows",
            [f"python -m train.pretrain --config train/configs/ml-1m-hstu-shared512.json --dataset data/ml-1m --output_dir runs/ml-1m-hstu "
             f"--results_file {RES}/ml-1m-hstu.json",
             "python -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path runs/ml-1m-hstu "
             f"--output_dir runs/ml-1m-geniusrec-no-text --results_file {RES}/ml-1m-geniusrec-no-text-shared512-encoder.json",
             f"python -m train.pretrain --config train/configs/ml-1m-sasrec.json --dataset data/ml-1m --output_dir runs/ml-1m-sasrec "
             f"--results_file {RES}/ml-1m-sasrec-sampled.json",
             "python -m train.pretrain --config train/configs/ml-1m-hstu-shared512.json --dataset data/ml-1m --protocol sessions --num_train_epochs 40 "
             f"--output_dir runs/ml-1m-hstu-sessions --results_file {RES}/ml-1m-hstu-sessions.json"], ["data"]),
    }


def dense_ablation(RES: str) -> list:
    """Issue 42 item 2: the dense objective's variants, 15 epochs on seed-42 validation, then their cost per step."""
    return [f"python -m train.pretrain --config train/configs/ml-1m-hstu-cpu-fast.json --dataset data/ml-1m --num_train_epochs 15 --future_items {k} "
            + ("" if w == 1 else f"--future_loss_weight {w} ")
            + f"--seed 42 --evaluate_test false --resume_from_checkpoint auto --output_dir runs/s42/dense-k{k}{tag}-15ep "
            f"--results_file {RES}/ml-1m-hstu-dense-k{k}{tag}-15ep-validation.json"
            for k, w, tag in ((3, 1, ""), (2, 1, ""), (3, 0.25, "-w0.25"))] + [
        "python -m benchmarks.prefix_cost --dataset data/ml-1m --encoder runs/s42/dense-k2-15ep --dense "
        f"runs/s42/dense-k2-15ep,runs/s42/dense-k3-w0.25-15ep --prefix '' --steps 60 --warmup 3 --output {RES}/dense-cost.json"]


def issue42_recipes(Recipe, RES: str) -> dict:
    """Issue 42: the stage-1 schedule over 3 seeds, the dense objective, the joint stage 2 and the same-budget pairs."""
    schedule = ("python -m train.pretrain --config train/configs/ml-1m-hstu-cpu-fast.json --dataset data/ml-1m {flags} --seed {seed} "
                "--resume_from_checkpoint auto --output_dir runs/s1/{name}-{seed} --results_file " + RES + "/ml-1m-hstu-schedule-{name}-seed{seed}{suffix}.json")
    cosine = "--num_train_epochs 40 --lr_scheduler_type cosine"
    plateau = ("--lr_scheduler_type reduce_lr_on_plateau --lr_scheduler_kwargs '{\"mode\":\"max\",\"factor\":0.1,\"patience\":3}' "
               "--early_stopping_patience 8")
    joint = ("python -m train.finetune --config train/configs/ml-1m-geniusrec.json --dataset data/ml-1m --encoder_path runs/s1/plateau-{seed} "
             "--freeze_encoder false --encoder_learning_rate 1e-4 --encoder_loss_weight 1 --prefix_samples {p} --per_device_train_batch_size 16 "
             "--num_train_epochs 100 --max_train_seconds 300 --early_stopping_patience 100 --eval_on_start false --evaluate_test false "
             "--seed {seed} --resume_from_checkpoint auto --output_dir runs/s3/joint-p{p}-{seed} --results_file " + RES + "/{file}.json")
    ablation = [cmd for p in (2, 4) for cmd in (
        joint.format(seed=42, p=p, file=f"ml-1m-joint-prefix{p}-seed42-validation"),
        f"python -m train.evaluate --model runs/s3/joint-p{p}-42 --dataset data/ml-1m --split validation --rank_with encoder "
        f"--output {RES}/ml-1m-joint-prefix{p}-seed42-validation-encoder.json")]
    pairs = []  # the ablation's winner: P = 4, ranked by the decoder's first step (its seed-42 run is the seed-42 arm)
    for seed in SEEDS:
        if seed != 42:
            pairs.append(joint.format(seed=seed, p=4, file=f"ml-1m-same-budget-geniusrec-seed{seed}-train"))
        pairs += [f"python -m train.evaluate --model runs/s3/joint-p4-{seed} --dataset data/ml-1m --split test --rank_with model "
                  f"--output {RES}/ml-1m-same-budget-geniusrec-seed{seed}-test.json",
                  "python -m train.pretrain --config train/configs/ml-1m-hstu-cpu-fast.json --dataset data/ml-1m "
                  f"--init_from runs/s1/plateau-{seed} --learning_rate 1e-4 --num_train_epochs 100 --max_train_seconds 300 "
                  f"--early_stopping_patience 100 --seed {seed} --resume_from_checkpoint auto --output_dir runs/s3/stage1-budget-{seed} "
                  f"--results_file {RES}/ml-1m-same-budget-stage1-seed{seed}.json"]
    pairs.append(f"python -m benchmarks.same_budget --geniusrec {RES}/ml-1m-joint-prefix4-seed42-validation.json "
                 f"{RES}/ml-1m-same-budget-geniusrec-seed43-train.json {RES}/ml-1m-same-budget-geniusrec-seed44-train.json "
                 f"--geniusrec_tests {seed_files(RES, 'ml-1m-same-budget-geniusrec-seed{seed}-test.json')} "
                 f"--stage1 {seed_files(RES, 'ml-1m-same-budget-stage1-seed{seed}.json')} --output {RES}/ml-1m-geniusrec-same-budget.json")
    sessions_encoder = "runs/s1/sessions-plateau-42"
    sessions = [schedule.format(flags=f"--protocol sessions {plateau}", seed=42, name="sessions-plateau", suffix="")
                .replace("runs/s1/sessions-plateau-42", sessions_encoder)]
    for seed in SEEDS:
        model = f"runs/s3/sessions-joint-p4-{seed}"
        test = (f"python -m train.evaluate --model {model} --dataset data/ml-1m --protocol sessions --split test --task sessions --num_beams 10 "
                "--decoding beam --first_step_weight 1 --encoder_query_weight 2 --popularity_penalty 0")
        sessions += [joint.format(seed=seed, p=4, file=f"ml-1m-sessions-joint-p4-seed{seed}-train")
                     .replace(f"runs/s1/plateau-{seed}", sessions_encoder).replace(f"runs/s3/joint-p4-{seed}", model)
                     .replace("--dataset data/ml-1m", "--dataset data/ml-1m --protocol sessions --session_set_loss_weight 3", 1),
                     f"{test} --stage1_baseline {model} --output {RES}/ml-1m-geniusrec-sessions-joint-seed{seed}.json",
                     f"{test} --stage1_baseline {sessions_encoder} --output {RES}/ml-1m-geniusrec-sessions-joint-vs-start-seed{seed}.json"]
    sessions += [f"python -m benchmarks.sessions_vs_list --seeds {seed_files(RES, 'ml-1m-geniusrec-sessions-joint' + name + '-seed{seed}.json')} "
                 f"--output {RES}/ml-1m-geniusrec-sessions-joint{name}.json" for name in ("", "-vs-start")]
    return {
        "stage1-schedule": Recipe(
            "README next item: a learning-rate schedule inside one run (cosine over 40 epochs; step decay on plateau), batch 16, "
            "chosen on seed-42 validation (plateau won), the winner's seed 42 tested once, seeds 43 / 44, the 3-seed file",
            [schedule.format(flags=cosine, seed=42, name="cosine40", suffix="-validation") + " --evaluate_test false",
             schedule.format(flags=plateau, seed=42, name="plateau", suffix="-validation") + " --evaluate_test false",
             "python -m train.evaluate --model runs/s1/plateau-42 --dataset data/ml-1m --split test "
             f"--output {RES}/ml-1m-hstu-schedule-plateau-seed42-test.json",
             *(schedule.format(flags=plateau, seed=s, name="plateau", suffix="") for s in (43, 44)),
             f"python -m benchmarks.stage1_best --runs {RES}/ml-1m-hstu-schedule-plateau-seed42-validation.json "
             f"{RES}/ml-1m-hstu-schedule-plateau-seed43.json {RES}/ml-1m-hstu-schedule-plateau-seed44.json "
             f"--tests {RES}/ml-1m-hstu-schedule-plateau-seed42-test.json - - --output {RES}/ml-1m-hstu-best.json"], ["data"]),
        "dense-ablation": Recipe(
            "issue 42: the dense multi-item objective (--future_items k) on the batch-16 recipe, 15 epochs, validation only, "
            "against the constant-rate run's epoch 15 (ml-1m-hstu-cpu-fast.json)",
            dense_ablation(RES), ["data"]),
        "prefix-cost": Recipe(
            "BENCHMARKS joint stage 2: seconds per epoch of the joint stage 2 with prefix packing (P = 2, 4, 8) against stage 1, same batches",
            [f"python -m benchmarks.prefix_cost --dataset data/ml-1m --encoder runs/s1/cosine40-42 --steps 50 --warmup 3 --prefix 2,4,8 "
             f"--output {RES}/prefix-cost.json"], ["stage1-schedule"]),
        "joint-ablation": Recipe(
            "BENCHMARKS joint stage 2: prefix packing P in {2, 4} from the seed-42 stage-1 checkpoint, 300 s each, validation only, "
            "scored with the decoder's first step and with the encoder inside",
            ablation, ["stage1-schedule"]),
        "same-budget": Recipe(
            "issue 42 item 3: the joint stage 2 (P = 4, the ablation's winner) against stage 1 given the same 300 s from the same "
            "checkpoint, 3 seeds, test read once per arm and seed", pairs, ["joint-ablation"]),
        "sessions-joint": Recipe(
            "issue 42 item 3: the sessions row with the joint recipe (P = 4, 300 s, set loss x3) from one stage-1 sessions encoder "
            "(the plateau recipe), 3 seeds, decoding as the sessions row's (beam, w 1, beta 2), against the list of the encoder "
            "inside each model and of the starting encoder", sessions, ["same-budget"]),
    }

