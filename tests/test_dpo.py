"""Stage 3: preference pairs from the train view only, TRL's DPOTrainer with and without LoRA, merged model."""

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from data_scripts.processed import load_processed
from data_scripts.splits import SequenceStore
from modeling_geniusrec import GeniusRecForSessionGeneration
from train import dpo

from .fixtures import write_tiny_stage2_and_pairs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo")
    write_tiny_stage2_and_pairs(root)
    return root


def test_pairs_come_from_the_train_view_only(setup):
    import datasets

    pairs = datasets.load_from_disk(str(setup / "pairs"))
    sequences, _, tokenizer, _ = load_processed(str(setup / "data"))
    store = SequenceStore.from_dataset(sequences)
    assert len(pairs) == 40
    for pair in pairs:
        assert len(pair["prompt_timestamps"]) == len(pair["prompt"].split()) - 1 and pair["next_timestamp"] >= pair["prompt_timestamps"][-1]
        assert pair["prompt"].endswith(" [SEP]") and pair["chosen"].endswith(" [EOS]") and pair["chosen_reward"] >= pair["rejected_reward"]
        prompt = tokenizer(pair["prompt"])["input_ids"][:-1]
        seq = store.row(store.user_ids.index(pair["user_id"]))[0].tolist()
        end = next(e for e in range(len(prompt), len(seq) + 1) if seq[e - len(prompt) : e] == prompt)
        # leave-one-out train view is seq[:-2]; the reward's reference items are its last 4: prompt ends 4 before it
        assert end == len(seq) - 2 - 4
        chosen = tokenizer(pair["chosen"])["input_ids"]
        assert len(chosen) == 5 and chosen[-1] == tokenizer.eos_token_id and min(chosen[:-1]) >= 4


def test_trl_fused_log_probs_equal_the_models_own(setup):
    from trl.trainer.utils import add_fused_lm_head

    model = GeniusRecForSessionGeneration.from_pretrained(setup / "stage2").eval()
    row = torch.tensor([[5, 6, 7, 8, 1, 9, 10, 11, 2], [12, 13, 1, 14, 15, 16, 2, 0, 0]])
    mask = row != 0
    times = dict(timestamps=torch.tensor([[100, 200, 300, 400] + [0] * 5, [50, 900] + [0] * 7]), next_timestamps=torch.tensor([500, 1000]))
    logits = model(input_ids=row, attention_mask=mask, **times).logits
    own = torch.log_softmax(logits[:, :-1], -1).gather(2, row[:, 1:].unsqueeze(-1)).squeeze(-1)
    labels = row.masked_fill(~mask, -100)
    add_fused_lm_head(model)
    fused = model(input_ids=row, attention_mask=mask, labels=labels, fused_lm_head=True, **times).log_probs
    completion = torch.zeros_like(row[:, 1:], dtype=torch.bool)
    completion[0, 4:], completion[1, 2:6] = True, True  # the tokens after [SEP]
    torch.testing.assert_close(fused[completion], own[completion], atol=1e-5, rtol=1e-5)


def test_dpo_with_lora(setup, tmp_path):
    base = GeniusRecForSessionGeneration.from_pretrained(setup / "stage2")
    trainer, summary = dpo.main(["--model", str(setup / "stage2"), "--pairs", str(setup / "pairs"), "--output_dir", str(tmp_path),
                                 "--use_peft", "true", "--lora_r", "4", "--learning_rate", "0.01", "--max_steps", "8",
                                 "--per_device_train_batch_size", "8", "--logging_steps", "1", "--disable_tqdm", "true"])
    log = summary["train_log"]
    assert log[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # dropout off, policy == reference: -log sigmoid(0)
    assert log[-1]["rewards/margins"] > log[0]["rewards/margins"]
    peft_model = trainer.model
    lora = {n: p for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())  # adapters trained (lora_B starts at zero)
    original = dict(base.named_parameters())
    frozen = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p for n, p in peft_model.named_parameters() if "lora_" not in n}
    assert set(frozen) == set(original)
    for name, param in original.items():
        assert torch.equal(frozen[name].detach(), param.detach()), name  # base weights untouched
    merged = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merged").eval()
    peft_model.eval()
    history = torch.tensor([[5, 6, 7, 8], [20, 21, 22, 23]])
    gen = dict(input_ids=history, timestamps=torch.arange(8).view(2, 4) * 100, next_timestamps=torch.tensor([900, 900]),
               num_beams=3, max_new_tokens=4)
    with peft_model.disable_adapter():
        reference = peft_model.get_base_model().generate(**gen)
    with_adapter = peft_model.get_base_model().generate(**gen)
    assert torch.equal(merged.generate(**gen), with_adapter)
    assert reference.shape == with_adapter.shape


def test_dpo_full_fine_tuning_changes_weights(setup, tmp_path):
    before = GeniusRecForSessionGeneration.from_pretrained(setup / "stage2").state_dict()
    dpo.main(["--model", str(setup / "stage2"), "--pairs", str(setup / "pairs"), "--output_dir", str(tmp_path),
              "--learning_rate", "0.001", "--max_steps", "3", "--per_device_train_batch_size", "8", "--disable_tqdm", "true"])
    after = GeniusRecForSessionGeneration.from_pretrained(tmp_path / "merged").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_pair_users_are_a_seeded_subset_and_held_out_users_exclude_them(setup, tmp_path):
    import datasets

    from train import evaluate
    from train.build_preference_pairs import pair_users

    sequences, _, _, _ = load_processed(str(setup / "data"))
    store = SequenceStore.from_dataset(sequences)
    some = pair_users(store, "leave-one-out", 10, 4, num_users=15, seed=3)
    assert len(some) == 15 and some == pair_users(store, "leave-one-out", 10, 4, num_users=15, seed=3)
    assert some != pair_users(store, "leave-one-out", 10, 4, num_users=15, seed=4)
    pairs_users = set(datasets.load_from_disk(str(setup / "pairs"))["user_id"])
    held_out = tmp_path / "users.txt"
    held_out.write_text("\n".join(sorted(pairs_users)[:25]))
    out = tmp_path / "m.json"
    evaluate.main(["--baseline", "popularity", "--dataset", str(setup / "data"), "--split", "validation",
                   "--exclude_users", str(held_out), "--output", str(out)])
    import json

    assert json.load(open(out))["users"] == 40 - 25


def test_dpo_choice_is_made_on_validation_by_the_stated_rule():

    from benchmarks import dpo_tradeoff as module
    before = {"ndcg@10": 0.10, "novelty": 3.0, "ild": 0.5}
    runs = {"a": {"ndcg@10": 0.099, "novelty": 3.3, "ild": 0.52},   # within 3%, min gain 4%
            "b": {"ndcg@10": 0.098, "novelty": 3.2, "ild": 0.55},   # within 3%, min gain 6.7%: chosen
            "c": {"ndcg@10": 0.090, "novelty": 4.0, "ild": 0.70}}   # big gains, but drops 10%
    assert module.choose(before, runs, 0.03)[0] == "b"
    assert module.choose(before, {"c": runs["c"]}, 0.03)[0] == "c"  # nothing qualifies: the smallest drop


def test_pairs_rank_several_candidates_and_the_accuracy_gate_keeps_accurate_chosen_sessions():
    """select_pairs by hand: one pair is best vs worst (the former rule); `pairs_per_user` pairs the best with the next
    worst ones above the margin; the accuracy gate drops users whose best candidate misses the real items and never
    rejects a candidate more accurate than the chosen one."""
    from types import SimpleNamespace

    from train.build_preference_pairs import select_pairs

    # (reward, accuracy, session)
    scored = [(0.9, 0.2, [1]), (0.5, 0.4, [2]), (0.2, 0.1, [3]), (0.1, 0.0, [4]), (0.88, 0.0, [5])]
    args = SimpleNamespace(margin=0.05, pairs_per_user=1, min_chosen_accuracy=0.0)
    assert [(b[2], w[2]) for b, w in select_pairs(scored, args)] == [([1], [4])]
    args.pairs_per_user = 3
    assert [(b[2], w[2]) for b, w in select_pairs(scored, args)] == [([1], [4]), ([1], [3]), ([1], [2])]  # [5] is within the margin
    args.min_chosen_accuracy = 0.1
    assert [(b[2], w[2]) for b, w in select_pairs(scored, args)] == [([1], [4]), ([1], [3])]  # [2] is more accurate than [1]
    args.min_chosen_accuracy = 0.3
    assert select_pairs(scored, args) == []  # the best candidate misses the gate


def test_pairs_on_the_sessions_protocol_with_the_evaluated_decoding(setup, tmp_path):
    """Pairs built with the sessions protocol, the first-step mix and the encoder query, several per user: at most
    `pairs_per_user` per user, more than one pair per user in all, every chosen reward above its rejected one."""
    import collections

    import datasets

    from train import build_preference_pairs

    common = ["--model", str(setup / "stage2"), "--dataset", str(setup / "data"), "--protocol", "sessions", "--holdout_length", "4",
              "--items_per_session", "4", "--num_candidates", "4", "--num_sampled", "2", "--margin", "0.01", "--max_length", "10",
              "--first_step_weight", "1", "--encoder_query_weight", "2", "--quiet"]
    build_preference_pairs.main([*common, "--out", str(tmp_path / "one")])
    build_preference_pairs.main([*common, "--pairs_per_user", "3", "--out", str(tmp_path / "three")])
    one, three = (datasets.load_from_disk(str(tmp_path / name)) for name in ("one", "three"))
    per_user = collections.Counter(three["user_id"])
    assert max(per_user.values()) <= 3 and len(three) > len(one) == len(set(one["user_id"]))
    assert all(c - r >= 0.01 - 1e-9 for c, r in zip(three["chosen_reward"], three["rejected_reward"]))
    with pytest.raises(SystemExit):
        build_preference_pairs.main([*common, "--pairs_per_user", "0", "--out", str(tmp_path / "zero")])


def test_dpo_frontier_rule_and_knob_comparison_by_hand():
    """The frontier's choice: within the NDCG floor the largest min(novelty, ILD) gain, else the smallest drop; the knob
    comparison takes the best novelty and ILD of knob points at least as accurate as the chosen run."""
    from benchmarks.dpo_frontier import choose, knob_comparison

    before = {"ndcg": 0.20, "novelty": 3.0, "ild": 0.50, "coverage": 0.5}
    runs = {"a": {"ndcg": 0.196, "novelty": 3.6, "ild": 0.52, "coverage": 0.5},   # min gain 4%
            "b": {"ndcg": 0.195, "novelty": 3.3, "ild": 0.56, "coverage": 0.5},   # min gain 10%: chosen
            "c": {"ndcg": 0.150, "novelty": 4.0, "ild": 0.70, "coverage": 0.5}}   # -25%
    assert choose(before, runs, 0.03)[0] == "b"
    assert choose(before, {"c": runs["c"], "d": {**runs["c"], "ndcg": 0.16}}, 0.03)[0] == "d"
    knobs = [{"knob": "mmr", "setting": 0.8, "ndcg": 0.197, "novelty": 3.1, "ild": 0.58},
             {"knob": "popularity_penalty", "setting": 0.2, "ndcg": 0.196, "novelty": 3.2, "ild": 0.50},
             {"knob": "popularity_penalty", "setting": 0.5, "ndcg": 0.180, "novelty": 3.9, "ild": 0.50}]  # below b's NDCG
    out = knob_comparison(runs["b"], knobs)
    assert out["knob_points_at_or_above_its_ndcg"] == 2 and out["best_knob_novelty"]["setting"] == 0.2
    assert out["best_knob_ild"]["knob"] == "mmr" and out["dpo_beats_knobs"] is False  # the MMR knob has more ILD
    assert knob_comparison({**runs["b"], "ild": 0.60}, knobs)["dpo_beats_knobs"] is True


def test_dpo_frontier_end_to_end_on_held_out_users(setup, tmp_path):
    """knobs -> dpo -> choose on the tiny model: every validation point is a JSON line, the pair users are never
    scored, the test is read for the starting model and the chosen run, and the frontier plot is written."""
    import json

    from benchmarks import dpo_frontier
    from train import build_preference_pairs

    pairs = tmp_path / "pairs"
    build_preference_pairs.main(["--model", str(setup / "stage2"), "--dataset", str(setup / "data"), "--protocol", "sessions",
                                 "--holdout_length", "4", "--items_per_session", "4", "--num_users", "15", "--num_candidates", "4",
                                 "--margin", "0.0", "--max_length", "10", "--quiet", "--out", str(pairs)])
    val, common = tmp_path / "val.jsonl", ["--model", str(setup / "stage2"), "--dataset", str(setup / "data"), "--holdout_length", "4"]
    dpo_frontier.main(["knobs", *common, "--exclude_users", str(pairs), "--alphas", "0.5", "--trade_offs", "0.5", "--combined", "0.5:0.5",
                       "--output", str(val)])
    dpo_frontier.main(["dpo", *common, "--name", "tiny", "--pairs", str(pairs), "--work_dir", str(tmp_path / "runs"), "--output", str(val),
                       "--dpo_args", "--use_peft true --max_steps 2 --per_device_train_batch_size 4 --learning_rate 1e-3"])
    lines = [json.loads(line) for line in open(val)]
    assert [(r["kind"], r.get("knob")) for r in lines] == [("before", None), ("knob", "popularity_penalty"), ("knob", "mmr"),
                                                           ("knob", "popularity_penalty+mmr"), ("dpo", None)]
    assert all(r["users"] == 40 - 15 and r["commit"] for r in lines)
    out = tmp_path / "results" / "dpo.json"
    results = dpo_frontier.main(["choose", *common, "--exclude_users", str(pairs), "--validation", str(val), "--output", str(out)])
    saved = json.load(open(out))
    assert saved["chosen"] == "tiny" and set(saved["metrics"]) == {"validation", "test_before", "test"}
    assert {"ndcg@4", "recall@4", "novelty", "ild", "coverage"} <= set(saved["metrics"]["test"]) and saved["ild_features"]
    assert set(saved["targets"]) == {"novelty", "ild", "ndcg"} and (tmp_path / "results" / "ml-1m-dpo-frontier.png").exists()
    assert results is None or isinstance(results, dict)


def test_generation_speed_benchmark_compares_the_two_beam_search_loops(setup, tmp_path):
    """benchmarks.generation_speed times the lean loop and, with --transformers_loop, transformers' own: the same
    sessions (saved by one, compared by the other), each cached == uncached, and the profile names its parts."""
    from benchmarks import generation_speed

    common = ["--dataset", str(setup / "data"), "--model", str(setup / "stage2"), "--batch_size", "8", "--num_beams", "3",
              "--items_per_session", "4", "--repeats", "1"]
    lean = generation_speed.main([*common, "--profile", "--save_sessions", str(tmp_path / "lean.pt")])
    assert lean["identical_outputs"] and lean["beam_search"].startswith("geniusrec")
    assert {"encoder", "decoder_steps", "head", "logits_processors", "log_softmax", "beam_search_other"} <= set(lean["profile_seconds"])
    assert lean["profile_seconds"]["beam_search_total"] > 0 and lean["profile_seconds"]["head"] >= lean["profile_seconds"]["decoder_steps"]
    theirs = generation_speed.main([*common, "--transformers_loop", "--compare_sessions", str(tmp_path / "lean.pt")])
    assert theirs["identical_outputs"] and theirs["identical_to_reference"] and theirs["beam_search"] == "transformers"
    import modeling_geniusrec.modeling_session_generation as module
    from modeling_geniusrec.beam_search import takes_lean_path

    assert module.takes_lean_path is takes_lean_path  # the switch lasted one run
    two_stage = generation_speed.main([*common, "--candidate_count", "20", "--profile"])  # cached == uncached there too, agreement reported
    assert two_stage["identical_outputs"] and two_stage["candidate_count"] == 20 and 0.0 <= two_stage["same_as_full_catalog"] <= 1.0
    parts = two_stage["profile_seconds"]
    # the two-stage search is the profiled search (its candidate scores: under a millisecond at this size)
    assert "candidate_scores" in parts and parts["beam_search_total"] >= parts["decoder_steps"] > 0 and parts["head"] == 0
