"""The ``probslot`` command line, generated from typed functions with jsonargparse.

Each subcommand is one typed, documented function; :data:`COMMANDS` maps names to them (a nested
dict makes a command group such as ``probslot data preview``). To add a subcommand, write the
function (parameters with type hints and defaults, a docstring with an ``Args:`` section) and add
one line to :data:`COMMANDS`; help text and argument parsing come from the signature.

Dotted config overrides (``model.num_slots=5``) may be given as bare arguments after the options
of ``train`` and ``demo``. User errors (missing files, bad values) print one line and exit with
status 2, without a traceback.
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

__all__ = ["COMMANDS", "build_parser", "demo", "main", "normalise_argv", "preview", "train"]

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


def _first_doc_line(fn: Callable[..., Any]) -> str:
    return (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""


def _doc_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """(description, {param: help}) from a Google-style docstring with an ``Args:`` section."""
    doc = inspect.cleandoc(fn.__doc__ or "")
    head, _, args = doc.partition("\nArgs:\n")
    helps: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        match = re.match(r"^\s{0,8}([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$", line)
        if match and not line.startswith(" " * 9):
            current = match.group(1)
            helps[current] = match.group(2).strip()
        elif current and line.strip():
            helps[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return head.strip(), helps


def command_parser(fn: Callable[..., Any]) -> Any:
    """A jsonargparse parser for a typed function: one ``--name`` option per parameter.

    The type of each option comes from the annotation, the help from the docstring's ``Args:``;
    parameters without a default are required; ``bool`` parameters become ``--flag/--no_flag``.
    """
    from jsonargparse import ActionYesNo, ArgumentParser

    description, helps = _doc_parts(fn)
    parser = ArgumentParser(description=description)
    hints = typing.get_type_hints(fn)
    for name, param in inspect.signature(fn).parameters.items():
        tp = hints.get(name, str)
        help_text = helps.get(name, "")
        required = param.default is inspect.Parameter.empty
        if tp is bool:
            parser.add_argument(
                f"--{name}", action=ActionYesNo, default=bool(param.default), help=help_text
            )
        elif required:
            parser.add_argument(f"--{name}", type=tp, required=True, help=help_text)
        else:
            parser.add_argument(f"--{name}", type=tp, default=param.default, help=help_text)
    return parser


def _add_commands(parser: Any, commands: dict[str, Any], dest: str) -> None:
    from jsonargparse import ArgumentParser

    sub = parser.add_subcommands(required=True, dest=dest)
    for name, target in commands.items():
        if isinstance(target, dict):
            group = ArgumentParser(description=f"{name} commands")
            sub.add_subcommand(name, group, help=f"{name} commands: {', '.join(target)}")
            _add_commands(group, target, dest=f"{name}_command")
        else:
            sub.add_subcommand(name, command_parser(target), help=_first_doc_line(target))


def build_parser() -> Any:
    """The jsonargparse parser of every command in :data:`COMMANDS`."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(
        prog="probslot",
        description="probslot: identifiable object-centric learning with Probabilistic Slot Attention.",
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
    parameter is ``run_dir`` or ``run_dirs``.
    """
    args = [_underscore_option(a) for a in argv]
    commands: Any = COMMANDS
    for i, token in enumerate(args):
        if token.startswith("-"):
            break
        target = commands.get(token) if isinstance(commands, dict) else None
        if target is None:
            break
        if isinstance(target, dict):
            commands = target
            continue
        params = list(inspect.signature(target).parameters)
        flag = _POSITIONAL.get(params[0]) if params else None
        if flag is None:
            break
        head, rest = args[: i + 1], args[i + 1 :]
        positional = []
        while rest and not rest[0].startswith("-") and not _OVERRIDE.match(rest[0]):
            positional.append(rest.pop(0))
        if flag == "--run_dir" and len(positional) > 1:
            raise SystemExit(
                f"probslot: error: {token} takes one run directory; got {len(positional)}: "
                f"{' '.join(positional)}"
            )
        expanded = [part for value in positional for part in (flag, value)]
        return head + expanded + rest
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``probslot`` console script."""
    args = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    args, overrides = split_overrides(args)
    parser = build_parser()
    ns = parser.parse_args(args)
    fn, kwargs = _resolve(ns, COMMANDS, "command")
    if overrides:
        if "overrides" not in kwargs:
            parser.error(f"config overrides {overrides} are not accepted by this command")
        kwargs["overrides"] = list(kwargs.get("overrides") or []) + overrides
    try:
        fn(**kwargs)
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, UsageError) as err:
        if os.environ.get("PROBSLOT_DEBUG"):
            raise
        message = " ".join(str(err).split())
        print(f"probslot: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
