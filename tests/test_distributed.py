"""Two CPU processes (gloo DDP through `accelerate launch`) follow the loss trajectory of one process with the same
global batch."""

import json
import os
import signal
import subprocess
import sys

import pytest

from data_scripts import movielens

from .fixtures import write_learnable_ml, write_tiny_stage2_and_pairs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--hidden_size", "16", "--qk_head_dim", "8", "--v_head_dim", "8", "--max_length", "20", "--dropout", "0.0",
        "--loss_type", "full_softmax", "--learning_rate", "0.01", "--max_steps", "6", "--logging_strategy", "steps", "--logging_steps", "1",
        "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false", "--disable_tqdm", "true",
        "--use_cpu", "true", "--seed", "7"]


def run(cmd, tmp_path, timeout=300):
    """Runs `cmd` in its own session; on a timeout the whole session (the launcher and its ranks) is killed, so a hung
    rank never outlives the test, and the failure says so."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(cmd[:4])} ... did not end in {timeout} s (every process of it killed); its stderr ends:\n{stderr[-2000:]}")
    assert process.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)


def test_leave_together_lets_gloo_settle_before_destroying_the_group(monkeypatch):
    """The exit order that keeps a rank from deadlocking in gloo's destructor: barrier, a pause that releases the GIL,
    then destroy (one process: the barrier only)."""
    import time

    import torch

    from train import runner

    calls = []
    trainer = type("T", (), {"accelerator": type("A", (), {"wait_for_everyone": lambda self: calls.append("barrier")})()})()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(time, "sleep", lambda seconds: calls.append(("sleep", seconds)))
    runner.leave_together(trainer)
    assert calls == ["barrier", ("sleep", runner.GLOO_SETTLE_SECONDS), "destroy"] and runner.GLOO_SETTLE_SECONDS >= 0.05
    calls.clear()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    runner.leave_together(trainer)
    assert calls == ["barrier"]


def test_two_process_ddp_matches_one_process(tmp_path):
    write_learnable_ml(tmp_path / "raw", users=96)  # every user has the same length: equal token counts per rank
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "data")])
    common = ["-m", "train.pretrain", "--dataset", str(tmp_path / "data"), *ARGS]
    run([sys.executable, *common, "--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "16"], tmp_path)
    run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", os.path.join(ROOT, "train/accelerate/cpu_ddp.yaml"),
         *common, "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "8"], tmp_path)
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2  # really two processes
    assert len(one["train_loss_history"]) == len(two["train_loss_history"]) == 6
    assert one["train_loss_history"][-1] < one["train_loss_history"][0]
    # tolerance: float32 reductions in a different order (gloo all-reduce of two half-batch gradients)
    assert two["train_loss_history"] == pytest.approx(one["train_loss_history"], rel=2e-3)


def test_dpo_runs_under_accelerate_launch_with_two_processes(tmp_path):
    """Stage 3 as many-GPU users run it: `accelerate launch` (2 CPU processes, gloo) on TRL's DPOTrainer with LoRA;
    the same global batch as one process gives the same loss trajectory, and one process writes the outputs."""
    write_tiny_stage2_and_pairs(tmp_path, users=32, items=40)
    common = ["-m", "train.dpo", "--model", str(tmp_path / "stage2"), "--pairs", str(tmp_path / "pairs"), "--use_peft", "true",
              "--lora_r", "4", "--learning_rate", "0.01", "--max_steps", "4", "--logging_steps", "1", "--disable_tqdm", "true",
              "--use_cpu", "true", "--seed", "7"]
    run([sys.executable, *common, "--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "8"], tmp_path)
    run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", os.path.join(ROOT, "train/accelerate/cpu_ddp.yaml"),
         *common, "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "4"], tmp_path)
    one = json.loads((tmp_path / "one" / "dpo_summary.json").read_text())
    two = json.loads((tmp_path / "two" / "dpo_summary.json").read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    losses = lambda summary: [entry["loss"] for entry in summary["train_log"] if "train_runtime" not in entry]  # noqa: E731
    assert len(losses(one)) == len(losses(two)) == 4
    assert losses(two) == pytest.approx(losses(one), rel=5e-3)
    assert (tmp_path / "two" / "merged" / "model.safetensors").exists()
    assert not list((tmp_path / "two").glob(".*.tmp")) and not (tmp_path / "two" / ".geniusrec.lock").exists()
