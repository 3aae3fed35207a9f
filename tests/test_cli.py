"""Every subcommand answers --help and explains its flags."""

import pytest

from train import cli


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--" in text and "usage" in text.lower()


def test_top_level_help_lists_subcommands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.SUBCOMMANDS)
    assert cli.main(["nope"]) == 2


def test_one_flag_convention_with_deprecated_spellings_and_config(tmp_path, capsys):
    import json
    import warnings

    import pytest

    from data_scripts.arguments import make_parser, parse_args
    from train.evaluate import EvaluateArguments

    parser = make_parser(EvaluateArguments, description="x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (args,) = parse_args(parser, ["--dataset", "d", "--max-users", "7", "--no-filter-history"],
                             aliases={"--no-filter-history": ["--filter_history", "none"]})
    assert args.max_users == 7 and args.filter_history == "none"
    assert any("--max-users is deprecated: use --max_users" in str(w.message) for w in caught)
    # a renamed flag (one meaning per word: the protocol's k is --holdout_length), old spellings and config key kept
    renamed = {"session_length": "holdout_length"}
    for argv in (["--session_length", "7"], ["--session-length", "7"], ["--session_length=7"]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (args,) = parse_args(parser, ["--dataset", "d", *argv], renamed=renamed)
        assert args.holdout_length == 7, argv
        assert any("use --holdout_length" in str(w.message) for w in caught), argv
    old_config = tmp_path / "old.json"
    old_config.write_text(json.dumps({"session_length": 5}))
    with pytest.warns(FutureWarning, match="holdout_length"):
        (args,) = parse_args(make_parser(EvaluateArguments, config=True), ["--dataset", "d", "--config", str(old_config)], renamed=renamed)
    assert args.holdout_length == 5
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"batch_size": 17}))
    parser = make_parser(EvaluateArguments, config=True)
    (args,) = parse_args(parser, ["--dataset", "d", f"--config={config}"])  # the `=` spelling is not ignored
    assert args.batch_size == 17
    with pytest.raises(SystemExit):
        parse_args(make_parser(EvaluateArguments, config=True), ["--dataset", "d", "--config"])
    assert "--config needs a path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_parser(EvaluateArguments).parse_args(["--help"])
    assert "(default: 256)" in capsys.readouterr().out  # --help shows every default


def test_the_console_command_works_from_a_folder_with_its_own_train_py(tmp_path):
    """`geniusrec <job>` (the documented interface) runs our job from any folder, even one holding a `train.py` or a
    `train/` package of the user's, which `python -m train.pretrain` would run instead (issue 41)."""
    import os
    import subprocess
    import sys

    command = os.path.join(os.path.dirname(sys.executable), "geniusrec")
    if not os.path.exists(command):
        pytest.skip("the geniusrec console command is not installed in this environment (pip install -e .)")
    (tmp_path / "train.py").write_text("print('my own training script')\n")
    (tmp_path / "data_scripts.py").write_text("print('my own data script')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for job, words in (("pretrain", "--output_dir"), ("interactions", "--events"), ("recommend", "--histories"), ("serve", "--port")):
        result = subprocess.run([command, job, "--help"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert words in result.stdout and "my own" not in result.stdout + result.stderr
    from .test_readme import write_own_data  # and the README's own-data commands for real, from that folder

    write_own_data(tmp_path)
    for line in (["interactions", "--events", "events.csv", "--items", "items.csv", "--out", "data/mine"], ["check", "data/mine"]):
        result = subprocess.run([command, *line], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0 and "my own" not in result.stdout + result.stderr, result.stderr[-2000:]
    assert "ok: data/mine" in result.stdout and (tmp_path / "data" / "mine" / "stats.json").exists()
