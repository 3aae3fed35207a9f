"""The GPU stage-1 benchmark script runs (on CPU, `--smoke`), so that it cannot rot between GPU sessions."""

import importlib.util
import json
import os

from data_scripts import movielens

from .fixtures import write_learnable_ml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_script_smoke(tmp_path):
    write_learnable_ml(tmp_path / "raw", users=40, items=40)
    movielens.main(["--raw_dir", str(tmp_path / "raw"), "--out", str(tmp_path / "data")])
    spec = importlib.util.spec_from_file_location("gpu_ml1m", os.path.join(ROOT, "benchmarks", "gpu_ml1m.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu.json"
    module.main(["--dataset", str(tmp_path / "data"), "--smoke", "--models", "ml-1m-hstu", "--output_dir", str(tmp_path / "runs"),
                 "--output", str(out)])
    results = json.loads(out.read_text())
    run = results["runs"]["ml-1m-hstu"]
    assert results["smoke"] and results["commit"] and {"validation", "test"} <= set(run["metrics"])
    assert "seconds_to_hstu_quality" in run and "seconds_to_hstu_large_quality" in run
    assert module.time_to([{"epoch": 1.0, "eval_ndcg@10": 0.1}, {"epoch": 2.0, "eval_ndcg@10": 0.18}], 100.0, 4.0, 0.172) == (2.0, 50.0)
    assert module.time_to([{"epoch": 1.0, "eval_ndcg@10": 0.1}], 100.0, 1.0, 0.172) == (None, None)
