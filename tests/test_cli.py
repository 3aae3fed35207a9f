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
        (args,) = parse_args(parser, ["--dataset", "d", "--session-length", "7", "--no-filter-history"],
                             aliases={"--no-filter-history": ["--filter_history", "none"]})
    assert args.session_length == 7 and args.filter_history == "none"
    assert any("--session-length is deprecated: use --session_length" in str(w.message) for w in caught)
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
