"""`python -m benchmarks.reproduce` (issue 40): one registry of the commands behind every README row, listed, printed
and run; every command names a module that exists and flags that module accepts."""

import contextlib
import importlib
import io
import os
import re
import shlex

import pytest

from benchmarks import reproduce
from benchmarks.reproduce import RECIPES, ROOT, Recipe


def test_list_names_every_recipe_one_a_line(capsys):
    assert reproduce.main(["--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(RECIPES)
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # each with what it reproduces


def test_every_recipe_dry_runs_without_running_anything(capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run ran a command")

    monkeypatch.setattr(reproduce.subprocess, "call", refuse)
    for name, recipe in RECIPES.items():
        assert reproduce.main([name, "--dry_run"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"# {name}: ") and all(command in out for command in recipe.commands), name
        assert all(need in RECIPES for need in recipe.needs), (name, recipe.needs)
    with pytest.raises(SystemExit):
        reproduce.main(["no-such-recipe"])
    assert "no recipe named no-such-recipe" in capsys.readouterr().err


def accepted_flags(module: str, words: list) -> set:
    """The flags a module's parser shows in `--help` (for a subcommand, its own help)."""
    sub = [words[0]] if words and not words[0].startswith("-") else []
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        importlib.import_module(module).main([*sub, "--help"])
    return set(re.findall(r"--[\w-]+", out.getvalue()))


def test_every_command_names_an_existing_module_and_flags_it_accepts():
    flags_of, stale = {}, []
    for name, recipe in RECIPES.items():
        for command in recipe.commands:
            words = shlex.split(command)
            if words[0] != "python":
                path = os.path.join(ROOT, words[0])
                assert os.path.isfile(path) and os.access(path, os.X_OK), f"{name}: {words[0]} is not an executable script"
                continue
            assert words[1] == "-m", command
            module, rest = words[2], words[3:]
            key = (module, rest[0] if rest and not rest[0].startswith("-") else None)
            if key not in flags_of:
                flags_of[key] = accepted_flags(module, rest)
            stale += [f"{name}: {module} has no {word}" for word in rest if re.fullmatch(r"--[\w-]+", word) and word not in flags_of[key]]
            for nested in (rest[i + 1] for i, word in enumerate(rest[:-1]) if word == "--dpo_args"):  # train.dpo's own flags
                flags_of.setdefault(("train.dpo", None), accepted_flags("train.dpo", []))
                dpo_flags = flags_of[("train.dpo", None)]
                stale += [f"{name}: train.dpo has no {w}" for w in shlex.split(nested) if w.startswith("--") and w not in dpo_flags]
    assert not stale, "\n".join(stale)


def test_run_runs_in_order_and_skips_what_is_done(tmp_path, monkeypatch, capsys):
    done = tmp_path / "done.json"
    done.write_text("{}")
    target = tmp_path / "made.txt"
    monkeypatch.setitem(RECIPES, "tiny", Recipe("a test recipe", [
        f"python -c pass --output {done}",
        f"python -c {shlex.quote(f'open({str(target)!r}, {chr(34)}w{chr(34)}).write({chr(34)}ok{chr(34)})')}",
    ]))
    assert reproduce.main(["tiny", "--skip_done"]) == 0
    out = capsys.readouterr().out
    assert f"# done already ({done})" in out and target.read_text() == "ok"
    monkeypatch.setitem(RECIPES, "failing", Recipe("fails", ["python -c exit(3)", f"python -c {shlex.quote('raise SystemExit(9)')}"]))
    assert reproduce.main(["failing"]) == 3  # stops at the first failure
    assert "# exit 3" in capsys.readouterr().out


def test_the_former_run_scripts_are_folded_into_the_registry():
    left = [name for name in os.listdir(os.path.join(ROOT, "benchmarks")) if re.fullmatch(r"run_.*\.sh", name)]
    assert not left, f"benchmarks/{left[0]} is a run log outside the registry: fold it into benchmarks.reproduce"
