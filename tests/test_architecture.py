"""The house plan of README.md ("Architecture"): no module imports upward."""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# part -> the first-party packages it may import
ALLOWED = {
    "modeling_geniusrec": {"modeling_geniusrec"},
    "data_scripts": {"modeling_geniusrec", "data_scripts"},
    "train/evaluation": {"modeling_geniusrec", "data_scripts", "train.evaluation"},
}
FIRST_PARTY = ("modeling_geniusrec", "data_scripts", "train", "benchmarks")


def imported_modules(path):
    tree = ast.parse(open(path).read())
    package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_no_module_imports_upward(part):
    bad = []
    for path in glob.glob(os.path.join(ROOT, part, "**", "*.py"), recursive=True):
        for module in imported_modules(path):
            if module and module.split(".")[0] in FIRST_PARTY and not any(module == a or module.startswith(a + ".") for a in ALLOWED[part]):
                bad.append(f"{os.path.relpath(path, ROOT)} imports {module}")
    assert not bad, "\n".join(bad)


def test_the_model_package_holds_only_what_a_checkpoint_needs():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "modeling_geniusrec", "*.py"))}
    assert not names & {"data.py", "splits.py", "metrics.py", "session_metrics.py", "embedding.py"}
