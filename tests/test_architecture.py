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


PARTS = ("modeling_geniusrec", "data_scripts", "train", "benchmarks")


def first_party_files():
    for part in PARTS:
        yield from sorted(glob.glob(os.path.join(ROOT, part, "**", "*.py"), recursive=True))


def test_benchmarks_are_a_package_using_public_helpers_only():
    """`python -m benchmarks.NAME`: no script edits sys.path, none imports a private name of the library."""
    bad = []
    for path in glob.glob(os.path.join(ROOT, "benchmarks", "*.py")):
        source = open(path).read()
        if "sys.path.insert" in source or "sys.path.append" in source:
            bad.append(f"{os.path.relpath(path, ROOT)} edits sys.path")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FIRST_PARTY:
                bad += [f"{os.path.relpath(path, ROOT)} imports private {node.module}.{a.name}"
                        for a in node.names if a.name.startswith("_")]
    assert os.path.exists(os.path.join(ROOT, "benchmarks", "__init__.py"))
    assert not bad, "\n".join(bad)


def test_no_file_over_600_lines_and_no_function_over_80():
    """The size bars of the house (issue 29): long files split along what they hold, long functions into named steps."""
    bad = []
    for path in first_party_files():
        source = open(path).read()
        name = os.path.relpath(path, ROOT)
        if source.count("\n") > 600:
            bad.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    bad.append(f"{name}:{node.lineno} {node.name} is {length} lines")
    assert not bad, "\n".join(bad)


def test_scores_are_scaled_in_one_place():
    """`logit_scale` multiplies scores only in modeling_geniusrec/scoring.py (`scale_scores`); everything else calls it."""
    def is_scale(node):
        return (isinstance(node, ast.Attribute) and node.attr == "logit_scale") or (isinstance(node, ast.Name) and node.id == "logit_scale")

    bad = []
    for path in first_party_files():
        if path.endswith(os.path.join("modeling_geniusrec", "scoring.py")) or os.sep + "benchmarks" + os.sep in path:
            continue  # benchmarks/plain_hstu.py is the independent plain implementation, on purpose
        for node in ast.walk(ast.parse(open(path).read())):
            product = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and (is_scale(node.left) or is_scale(node.right))
            call = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("mul", "mul_")
                    and any(is_scale(a) for a in node.args))
            if product or call:
                bad.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not bad, "\n".join(bad)


def test_special_token_ids_are_never_spelled_as_numbers():
    """The tokenizer (tokenization_items: PAD/SEP/EOS/UNK ids, NUM_SPECIAL_TOKENS) and the configs own the special
    tokens; no default argument spells one as a literal."""
    bad = []
    for path in first_party_files():
        if path.endswith(os.path.join("modeling_geniusrec", "tokenization_items.py")) or os.sep + "benchmarks" + os.sep in path:
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args[len(node.args.args) - len(node.args.defaults):] + node.args.kwonlyargs
                defaults = list(node.args.defaults) + list(node.args.kw_defaults)
                for arg, default in zip(args, defaults):
                    special = arg.arg.endswith("_token_id") or arg.arg in ("num_special", "num_special_tokens")
                    if special and isinstance(default, ast.Constant) and isinstance(default.value, int):
                        bad.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name}({arg.arg}={default.value})")
    assert not bad, "\n".join(bad)


def test_one_helper_writes_the_provenance_block():
    """Results files get command, machine, date and commit from `train.evaluation.results.provenance` only."""
    bad = []
    for path in first_party_files():
        if path.endswith(os.path.join("train", "evaluation", "results.py")):
            continue
        source = open(path).read()
        if "git_commit()" in source or "machine_description()" in source:
            bad.append(os.path.relpath(path, ROOT))
    assert not bad, bad
