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
