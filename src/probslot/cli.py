"""The ``probslot`` command line, generated from typed functions with jsonargparse.

Each subcommand is one typed, documented function; :data:`COMMANDS` maps names to them (a nested
dict makes a command group such as ``probslot data preview``). To add a subcommand, write the
function (parameters with type hints and defaults, a docstring with an ``Args:`` section) and add
one line to :data:`COMMANDS`: jsonargparse's ``add_function_arguments`` turns the signature into
typed ``--name`` options, with help from the docstring (docstring-parser); ``bool`` parameters
become ``--name/--no_name`` flags.

This module adds only what people type on top: run directories and dataset names given
positionally (``probslot evaluate RUN``, ``probslot compare A B C``), hyphenated options
(``--max-images``) and bare dotted config overrides after ``train`` and ``demo``
(``model.num_slots=5``). User errors (a bad command line, missing files, bad values) print one
line ``probslot: error: ...`` naming the fix (``Did you mean --config?``) and exit with status 2,
without a traceback; ``PROBSLOT_DEBUG=1`` re-raises them.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "COMMANDS",
    "UsageError",
    "build_parser",
    "demo",
    "main",
    "normalise_argv",
    "parse_command",
    "preview",
    "train",
]

_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+=")


class UsageError(Exception):
    """A user error reported as one line with exit status 2."""


# --------------------------------------------------------------------------- commands
def train(
    config: str,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Train a slot autoencoder from a YAML config (a path or a preset name in configs/).

    Example: ``probslot train --config sprites_psa trainer.max_steps=20000 model.num_slots=5``.

    Args:
        config: YAML file, or a preset name such as sprites_psa, sprites_sa, demo.
        resume: continue the run from its last.ckpt (step count, optimizer state, EMA).
        overwrite: start afresh even if the run directory already holds a checkpoint.
        progress: show a progress bar.
        overrides: dotted overrides such as model.num_slots=5 (also accepted as bare arguments).
    """
    from probslot.config import load_config
    from probslot.training.run import train as run_train

    cfg = load_config(config, overrides or [])
    result = run_train(cfg, resume=resume, overwrite=overwrite, progress=progress)
    _print_outputs(result.run_dir, result)
    return result.run_dir


def demo(
    out: str = "runs/demo",
    config: str = "demo",
    progress: bool = True,
    train_only: bool = False,
    posterior_images: int = 2000,
    overrides: list[str] | None = None,
) -> Path:
    """The main job: train PSA on built-in sprites (CPU), then evaluate, sample, prune and report.

    Steps: train (checkpoint, panels, metrics.json) → aggregate posterior on training images →
    sample new scenes → prune slots (ARD sweep over τ) → evaluate on held-out sprites
    (eval.json) → report.html. Every output lands in `out`; the paths are printed at the end.

    Args:
        out: run directory to (re)write.
        config: YAML file or preset name used for the demo.
        progress: show progress bars.
        train_only: stop after training.
        posterior_images: training images the aggregate posterior is fitted on.
        overrides: dotted overrides such as trainer.max_minutes=5.
    """
    from probslot.evaluation.commands import evaluate as run_evaluate
    from probslot.evaluation.commands import report as run_report
    from probslot.posterior.commands import demo_posterior
    from probslot.training.demo import run_demo

    result = run_demo(out=out, config=config, overrides=overrides or [], progress=progress)
    _print_outputs(result.run_dir, result)
    if train_only:
        return result.run_dir
    run_dir = Path(result.run_dir)
    print("\n[2/4] aggregate posterior, scene samples and slot pruning")
    extra = demo_posterior(run_dir, max_images=posterior_images, progress=progress)
    print("\n[3/4] evaluation on held-out sprites")
    eval_path = run_evaluate(str(run_dir), split="test", progress=progress)
    print("\n[4/4] report")
    report_path = run_report([str(run_dir)], out=str(run_dir / "report.html"))
    print("\nprobslot demo finished. Outputs:")
    for label, path in [
        ("run directory", run_dir),
        ("metrics", run_dir / "metrics.json"),
        ("evaluation", eval_path),
        *((name, p) for name, p in extra.items()),
        ("report", report_path),
    ]:
        print(f"  {label:<14} {path}")
    return run_dir


def preview(
    name: str = "sprites",
    out: str = "runs/preview/sprites.png",
    num: int = 16,
    seed: int = 0,
    image_size: int | None = None,
    min_objects: int | None = None,
    max_objects: int | None = None,
    background: str | None = None,
) -> Path:
    """Write a PNG grid of dataset samples (images and ground-truth masks).

    Example: ``probslot data preview sprites --out grid.png --image_size 32``.

    Args:
        name: dataset name (sprites, toy2d, ...).
        out: PNG file to write.
        num: number of samples.
        seed: dataset seed.
        image_size: image side in pixels (sprites; default: the dataset's).
        min_objects: fewest objects per scene (sprites).
        max_objects: most objects per scene (sprites).
        background: background colour name, e.g. black, gray, white, random (sprites).
    """
    from probslot.data.preview import preview as data_preview

    options = {
        key: value
        for key, value in (
            ("image_size", image_size),
            ("min_objects", min_objects),
            ("max_objects", max_objects),
            ("background", background),
        )
        if value is not None
    }
    path = data_preview(name, out, num=num, seed=seed, **options)
    print(f"preview written to {path}")
    return Path(path)


#: name → command function; a nested dict is a command group (``probslot data preview``).
from probslot.evaluation.commands import compare, evaluate, report  # noqa: E402
from probslot.posterior.commands import aggregate, prune, sample  # noqa: E402

COMMANDS: dict[str, Any] = {
    "train": train,
    "demo": demo,
    "aggregate": aggregate,
    "sample": sample,
    "prune": prune,
    "evaluate": evaluate,
    "compare": compare,
    "report": report,
    "data": {"preview": preview},
}


# --------------------------------------------------------------------------- plumbing
def _print_outputs(run_dir: Path, metrics: dict[str, Any]) -> None:
    figures = ", ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
        for k, v in sorted(metrics.items())
        if k in ("fg_ari", "mse", "nll", "steps", "train_seconds")
    )
    print(f"final validation: {figures}")
    print(f"run directory:    {run_dir}")
    for name in (
        "config.yaml",
        "last.ckpt",
        "best.ckpt",
        "model.safetensors",
        "metrics.json",
        "MODEL_CARD.md",
    ):
        if (run_dir / name).exists():
            print(f"  {run_dir / name}")
    panels = sorted((run_dir / "panels").glob("*.png"))
    if panels:
        print(f"  {run_dir / 'panels'}/ ({len(panels)} panels, latest {panels[-1].name})")
    print(f"  {run_dir / 'logs'}/ (TensorBoard: tensorboard --logdir {run_dir / 'logs'})")


_USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, TypeError, UsageError)


def _doc(fn: Callable[..., Any]) -> Any:
    """The Google-style docstring of a command, parsed by docstring-parser (as jsonargparse does)."""
    import docstring_parser

    return docstring_parser.parse(fn.__doc__ or "")


def _flags(fn: Callable[..., Any]) -> list[str]:
    """The parameters typed ``bool`` that have a default: on the command line ``--name/--no_name``."""
    hints = typing.get_type_hints(fn)
    return [
        name
        for name, param in inspect.signature(fn).parameters.items()
        if hints.get(name) is bool and param.default is not inspect.Parameter.empty
    ]


def _command_parser(fn: Callable[..., Any]) -> Any:
    """The parser of one command, from its signature by jsonargparse (``add_function_arguments``).

    Each parameter becomes a typed ``--name`` option with the help of its ``Args:`` entry and its
    default; one without a default is required. ``bool`` parameters become ``--name/--no_name``
    flags (jsonargparse's ``ActionYesNo``) rather than jsonargparse's ``--name true``, since the
    docs and scripts write ``--resume`` and ``--no_progress``; ``bool | None`` keeps ``--name true``.
    """
    from jsonargparse import ActionYesNo, ArgumentParser

    doc = _doc(fn)
    parser = ArgumentParser(description=doc.description, exit_on_error=False, allow_abbrev=False)
    flags = _flags(fn)
    parser.add_function_arguments(fn, as_group=False, skip=set(flags))
    helps = {param.arg_name: param.description for param in doc.params}
    params = inspect.signature(fn).parameters
    for name in flags:
        parser.add_argument(
            f"--{name}", action=ActionYesNo, default=params[name].default, help=helps.get(name)
        )
    return parser


def _add_commands(parser: Any, commands: dict[str, Any], dest: str) -> None:
    from jsonargparse import ArgumentParser

    sub = parser.add_subcommands(required=True, dest=dest)
    for name, target in commands.items():
        if isinstance(target, dict):
            group = ArgumentParser(
                description=f"{name} commands", exit_on_error=False, allow_abbrev=False
            )
            sub.add_subcommand(name, group, help=f"{name} commands: {', '.join(target)}")
            _add_commands(group, target, dest=f"{name}_command")
        else:
            sub.add_subcommand(name, _command_parser(target), help=_doc(target).short_description)


def build_parser() -> Any:
    """The jsonargparse parser of every command in :data:`COMMANDS` (errors raise, not exit)."""
    from jsonargparse import ArgumentParser

    from probslot import __version__

    parser = ArgumentParser(
        prog="probslot",
        description="probslot: identifiable object-centric learning with Probabilistic Slot Attention.",
        exit_on_error=False,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"probslot {__version__}",
        help="Print the version and exit.",
    )
    _add_commands(parser, COMMANDS, dest="command")
    return parser


def _resolve(
    ns: Any, commands: dict[str, Any], dest: str
) -> tuple[Callable[..., Any], dict[str, Any]]:
    name = ns[dest]
    target = commands[name]
    sub = ns[name]
    if isinstance(target, dict):
        return _resolve(sub, target, f"{name}_command")
    kwargs = {k: v for k, v in sub.as_dict().items() if not k.startswith("__")}
    return target, kwargs


def _target(args: Sequence[str]) -> tuple[list[str], Any]:
    """The command words that `args` starts with and what they name: a function or a group."""
    path: list[str] = []
    target: Any = COMMANDS
    for token in args:
        if not isinstance(target, dict) or token not in target:
            break
        path.append(token)
        target = target[token]
    return path, target


def _options(target: Any) -> list[str]:
    """The option strings of a command (or of a group: ``--help``, ``--version``)."""
    if isinstance(target, dict):
        return ["--help", "--version"]
    names = [f"--{name}" for name in inspect.signature(target).parameters]
    return [*names, *(f"--no_{name}" for name in _flags(target)), "--help"]


#: pieces of jsonargparse's error messages (jsonargparse 4.x) that `_explain` rewrites
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_GOT_VALUE = re.compile(r"(?:Got|Given) value: (.*)")
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)'")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
_REQUIRED = re.compile(r"arguments are required: (.*)")


def _explain(message: str, args: Sequence[str]) -> str:
    """One line for a jsonargparse parse error that names the fix (the closest command or option).

    jsonargparse reports a bad value over several lines (``Does not validate against any of the
    Union subtypes ... <class 'NoneType'>``); the user reads ``--tau expects float | None; got
    'abc'`` with the type from the command's signature.
    """
    from probslot.config import type_name
    from probslot.registry import closest, did_you_mean

    path, target = _target(args)
    see = f" (see {' '.join(['probslot', *path, '--help'])})"
    if (match := _INVALID_CHOICE.search(message)) and isinstance(target, dict):
        names = list(target)
        return (
            f"unknown command {match[1]!r}.{did_you_mean(match[1], names)} "
            f"Commands: {', '.join(names)}{see}"
        )
    if match := _UNRECOGNIZED.search(message):
        unknown = match[1].strip()
        option = next((t.split("=")[0] for t in unknown.split() if t.startswith("--")), None)
        # compared without the dashes, which every option shares
        hint = closest(option[2:], [o[2:] for o in _options(target)]) if option else None
        dym = f" Did you mean --{hint}?" if hint else ""
        return f"unrecognized arguments: {unknown}.{dym}{see}"
    if match := _PARSER_KEY.search(message):
        key = match[1].rsplit(".", 1)[-1]
        hints = typing.get_type_hints(target) if callable(target) else {}
        expected = type_name(hints[key]) if key in hints else "another value"
        value = _GOT_VALUE.search(message)
        return f"--{key} expects {expected}{f'; got {value[1]!r}' if value else ''}{see}"
    if match := _REQUIRED.search(message):
        missing = ", ".join("--" + key.rsplit(".", 1)[-1] for key in match[1].split(", "))
        return f"{' '.join(['probslot', *path])} needs {missing}{see}"
    if isinstance(target, dict):  # a group without one of its commands
        return f"{' '.join(['probslot', *path])} needs a command: {', '.join(target)}{see}"
    return " ".join(message.split()) + see


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate bare dotted overrides (``model.num_slots=5``) from the other arguments."""
    rest, overrides = [], []
    for arg in argv:
        (overrides if _OVERRIDE.match(arg) else rest).append(arg)
    return rest, overrides


#: leading parameters that may be given positionally: ``probslot evaluate RUN_DIR``
_POSITIONAL = {"run_dir": "--run_dir", "run_dirs": "--run_dirs+", "name": "--name"}


def _underscore_option(arg: str) -> str:
    """``--max-images=5`` → ``--max_images=5``; anything that is not a long option is unchanged."""
    if not arg.startswith("--") or len(arg) == 2:
        return arg
    name, sep, value = arg[2:].partition("=")
    return f"--{name.replace('-', '_')}{sep}{value}"


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """Accept the spellings people type: positional run directories and hyphenated options.

    ``probslot evaluate RUN --max-images 10`` becomes ``evaluate --run_dir RUN --max_images 10``
    and ``probslot compare A B C`` becomes ``compare --run_dirs+ A --run_dirs+ B ...``: the
    tokens right after the subcommand that are not options fill its first parameter when that
    parameter is ``run_dir``, ``run_dirs`` or ``name``. (jsonargparse's own positionals,
    ``as_positional=True``, would stop ``--run_dir RUN`` working, which the docs also write.)

    Raises:
        UsageError: two run directories for a command that takes one.
    """
    args = [_underscore_option(a) for a in argv]
    path, target = _target(args)
    params = [] if isinstance(target, dict) else list(inspect.signature(target).parameters)
    flag = _POSITIONAL.get(params[0]) if params else None
    if flag is None:
        return args
    head, rest = args[: len(path)], args[len(path) :]
    positional = []
    while rest and not rest[0].startswith("-") and not _OVERRIDE.match(rest[0]):
        positional.append(rest.pop(0))
    if flag == "--run_dir" and len(positional) > 1:
        raise UsageError(
            f"{' '.join(path)} takes one run directory; got {len(positional)}: "
            f"{' '.join(positional)}"
        )
    return head + [part for value in positional for part in (flag, value)] + rest


def parse_command(argv: Sequence[str]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The command function that `argv` names and its keyword arguments.

    Raises:
        UsageError: the command line does not parse (one line naming the fix).
    """
    from jsonargparse import ArgumentError

    args, overrides = split_overrides(normalise_argv(argv))
    try:
        ns = build_parser().parse_args(args)
    except ArgumentError as err:
        raise UsageError(_explain(str(err), args)) from None
    fn, kwargs = _resolve(ns, COMMANDS, "command")
    if overrides:
        if "overrides" not in kwargs:
            takers = [name for name, f in COMMANDS.items() if callable(f) and _takes_overrides(f)]
            raise UsageError(
                f"config overrides {' '.join(overrides)} are not accepted by "
                f"{' '.join(_target(args)[0])}; only {', '.join(takers[:-1])} and {takers[-1]} "
                "take them (train and demo any section, the analyses data.* only)"
            )
        kwargs["overrides"] = list(kwargs.get("overrides") or []) + overrides
    return fn, kwargs


def _takes_overrides(fn: Callable[..., Any]) -> bool:
    return "overrides" in inspect.signature(fn).parameters


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``probslot`` console script: 0 on success, 2 on a user error."""
    try:
        fn, kwargs = parse_command(list(sys.argv[1:] if argv is None else argv))
        fn(**kwargs)
    except _USER_ERRORS as err:
        if os.environ.get("PROBSLOT_DEBUG"):
            raise
        message = " ".join(str(err).split())
        print(f"probslot: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
