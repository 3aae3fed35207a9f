"""One command-line convention for every entry point: `HfArgumentParser` dataclasses, underscore flags as in
transformers and TRL (`--holdout_length`), every flag with help text and its default shown by `--help`, and an
optional `--config file.json` of defaults that flags override.

Hyphenated spellings of earlier releases (`--session-length`) are still accepted for one release, with a
deprecation note on stderr.
"""

import argparse
import json
import os
import sys
import warnings

from transformers import HfArgumentParser


def make_parser(dataclass_types, description: str | None = None, config: bool = False) -> HfArgumentParser:
    """An `HfArgumentParser` over `dataclass_types` whose `--help` shows the module docstring and every default."""
    # allow_abbrev=False: a typo such as --num_beam must be an error, not silently --num_beams
    parser = HfArgumentParser(dataclass_types, description=description, formatter_class=_HelpFormatter, allow_abbrev=False)
    if "--debug" not in option_strings(parser):  # TrainingArguments has its own
        parser.add_argument("--debug", action="store_true", help=f"show the full Python traceback of an error (also {DEBUG_ENV}=1)")
    if config:
        parser.add_argument("--config", default=None, help="JSON file of defaults (train/configs/*.json); flags override it")
    return parser


def parse_mapping(value, flag: str) -> dict[str, str]:
    """`NAME=VALUE` entries (a flag's list) or a JSON object (a config file's) -> `{name: value}`; a malformed entry
    or a repeated name is a `ValueError` naming `flag` and the expected form."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        value = [value]
    mapping = {}
    for entry in value:
        name, eq, target = str(entry).partition("=")
        if not eq or not name or not target:
            raise ValueError(f"{flag} takes NAME=VALUE entries (e.g. {flag} text=text.safetensors), got {entry!r}")
        if name in mapping:
            raise ValueError(f"{flag}: {name!r} given twice")
        mapping[name] = target
    return mapping


def option_strings(parser) -> set[str]:
    """Every flag `parser` accepts (`--holdout_length`, `-h`, ...)."""
    return {option for action in parser._actions for option in action.option_strings}


DEBUG_ENV = "GENIUSREC_DEBUG"
# what a user's mistake raises (a missing or foreign file, a bad value, a folder in use): one line, exit code 2;
# anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def run_cli(main, argv: list[str] | None = None) -> int:
    """Runs an entry point's `main(argv)` as a command: a user's mistake (see `USER_ERRORS`) ends with one line
    `error: <what happened and the fix>` on stderr and exit code 2, Ctrl-C with `interrupted` and exit code 130; a
    bug keeps its traceback. A bare `--debug` (or `GENIUSREC_DEBUG=1`) shows the traceback always; it is taken out of
    `argv` here (the training scripts' `TrainingArguments.debug` takes a value, `--debug underflow_overflow`, and keeps
    it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    bare = {i for i, arg in enumerate(argv) if arg == "--debug" and (i + 1 == len(argv) or argv[i + 1].startswith("--"))}
    debug = bool(bare) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [arg for i, arg in enumerate(argv) if i not in bare]
    try:
        main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"error: {error} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def normalize_flags(parser, argv: list[str], aliases: dict | None = None) -> list[str]:
    """Rewrites deprecated spellings: `--a-b` -> `--a_b` when `a_b` is a flag of `parser`, and `aliases`
    (`{"--old": ["--new", "value"]}`), each with a one-time `FutureWarning`."""
    known = option_strings(parser)
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag.startswith("--") and "-" in flag[2:] and not (aliases and flag in aliases):
            underscored = "--" + flag[2:].replace("-", "_")  # HfArgumentParser accepts it silently: say it is deprecated
            if underscored in known or (aliases and underscored in aliases):
                warnings.warn(f"{flag} is deprecated: use {underscored}", FutureWarning, stacklevel=3)
                flag = underscored
        if aliases and flag in aliases:
            replacement = list(aliases[flag])
            warnings.warn(f"{flag} is deprecated: use {' '.join(replacement)}", FutureWarning, stacklevel=3)
            out += replacement + ([value] if eq else [])
            continue
        out.append(flag + eq + value if eq else flag)
    return out


def parse_args(parser, argv=None, aliases: dict | None = None, renamed: dict | None = None) -> tuple:
    """Parses `argv` (default `sys.argv[1:]`) into the parser's dataclasses, applying `--config file.json`
    (or `--config=file.json`) as defaults that flags override. Unknown flags and unknown config keys are errors.
    `renamed` (`{"old_name": "new_name"}`): the older flag and config key still work for one release, with a
    `FutureWarning` naming the new one."""
    renamed = renamed or {}
    aliases = {**(aliases or {}), **{f"--{old}": [f"--{new}"] for old, new in renamed.items()}}
    argv = normalize_flags(parser, list(sys.argv[1:] if argv is None else argv), aliases)
    config_path = None
    for index, arg in enumerate(argv):
        if arg == "--config" or arg.startswith("--config="):
            if arg == "--config":
                if index + 1 >= len(argv) or argv[index + 1].startswith("--"):
                    parser.error("--config needs a path to a JSON file (e.g. --config train/configs/ml-1m-hstu.json)")
                config_path = argv[index + 1]
                del argv[index : index + 2]
            else:
                config_path = arg.split("=", 1)[1]
                del argv[index]
            break
    if config_path is not None:
        if not os.path.exists(config_path):
            parser.error(f"config file {config_path!r} not found (frozen configs live in train/configs/)")
        with open(config_path) as f:
            defaults = json.load(f)
        for old, new in renamed.items():
            if old in defaults:
                warnings.warn(f"{config_path}: key {old!r} is deprecated: use {new!r}", FutureWarning, stacklevel=2)
                defaults[new] = defaults.pop(old)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(defaults) - known)
        if unknown:
            parser.error(f"{config_path}: unknown keys {unknown}; see --help for the accepted flags")
        parser.set_defaults(**defaults)
    known = option_strings(parser)
    unknown = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--") and arg.split("=", 1)[0] not in known]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (see --help for the accepted flags)")
    outputs = parser.parse_args_into_dataclasses(args=argv)
    return tuple(o for o in outputs if not isinstance(o, argparse.Namespace))


__all__ = ["make_parser", "normalize_flags", "parse_args", "parse_mapping", "run_cli", "USER_ERRORS"]
