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
    "data_convert",
    "data_info",
    "demo",
    "experiment",
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
        config: YAML file, or a preset name such as sprites_psa, sprites_sa, demo; with --resume
            also a run directory (runs/NAME).
        resume: continue the run from its last.ckpt and its own config.yaml (step count,
            optimizer, scheduler, EMA, data position, random states); only trainer settings
            such as trainer.max_steps may be overridden.
        overwrite: start afresh even if the run directory already holds a checkpoint.
        progress: show progress (a bar on a terminal, plain lines in a log file).
        overrides: dotted overrides such as model.num_slots=5 (also accepted as bare arguments).
    """
    from probslot.training.run import resolve_run_config
    from probslot.training.run import train as run_train

    cfg = resolve_run_config(config, overrides or [], resume=resume)
    result = run_train(cfg, resume=resume, overwrite=overwrite, progress=progress)
    if not result.is_global_zero:  # another process of a distributed run: rank 0 reports
        return result.run_dir
    if result.status != "finished":
        print(result.message)
        if result.status == "interrupted":
            raise SystemExit(143)  # 128 + SIGTERM: the job stopped early, as the shell reports it
        return result.run_dir
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


def data_convert(
    source: str,
    format: str,
    out: str,
    split: str | None = None,
    variant: str | None = None,
    limit: int | None = None,
    image_size: int | None = None,
    crop: str = "none",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert a published dataset into one fast local store (resumable; docs/data.md).

    Example: ``probslot data convert objects_room_train.tfrecords --format objects-room --out
    data/objects_room``, then ``probslot train --config objects_room_psa data.root=data/objects_room``.
    Run the same command again to resume an interrupted conversion.

    Args:
        source: the file or folder as published (a .tfrecords file, a folder of them, an HDF5
            pair's folder, CLEVR_v1.0/, clevrtex_full/, an .npz, a folder of images).
        format: clevr-with-masks, objects-room, multi-dsprites, tetrominoes, ocl-h5, clevr,
            clevrtex, spriteworld or image-folder.
        out: the store folder; the split goes to OUT/SPLIT (use it as data.root=OUT).
        split: the source's split (objects-room: train, six_objects, empty_room, identical_color;
            clevr: train, val; clevrtex: train, val, test, all); default: the format's first.
        variant: multi-dsprites: binarized, colored_on_grayscale, colored_on_colored; ocl-h5: the
            dataset name (clevr_10, ...); clevrtex: full, pbg, vbg, grassbg, camo, outd.
        limit: convert only the first LIMIT records.
        image_size: resize every image (after --crop) to this square side; default: keep it.
        crop: none, slot-attention, center, center-32 or clevrtex, applied before --image_size.
        overwrite: replace a store in OUT/SPLIT converted with other settings.
        progress: show a progress bar.
    """
    from probslot.data.store import convert as run_convert
    from probslot.data.store import read_manifest

    split_dir = run_convert(
        source,
        format,
        out,
        split=split,
        variant=variant,
        limit=limit,
        image_size=image_size,
        crop=crop,
        overwrite=overwrite,
        progress=progress,
    )
    manifest = read_manifest(split_dir)
    size = sum(f["bytes"] for s in manifest["shards"] for f in s["files"].values())
    print(f"store written to {split_dir} ({manifest['count']} records, {size / 1e6:.1f} MB)")
    print(f"  inspect it:  probslot data info {out}")
    presets = _presets_for(format)
    if presets:
        print(f"  train on it: probslot train --config {presets[0]} data.root={out}")
        print(f"  presets for {format}: {', '.join(presets)}")
    return split_dir


def data_info(store: str) -> str:
    """Print a store's manifest (splits, shapes, sources, sha256) and object-count statistics.

    Example: ``probslot data info data/objects_room``.

    Args:
        store: a store folder written by probslot data convert (or one of its split folders).
    """
    from probslot.data.store import store_info

    text = store_info(store)
    print(text)
    return text


def _presets_for(fmt: str) -> list[str]:
    """The presets in configs/ whose data.name is `fmt`."""
    import yaml

    from probslot.config import CONFIG_DIR

    names = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if (data.get("data") or {}).get("name") == fmt:
            names.append(path.stem)
    return names


def features_extract(
    config: str,
    out: str,
    splits: list[str] | None = None,
    batch_size: int = 32,
    chunk_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Run a feature model's frozen encoder once over data splits and write a feature cache.

    Example: ``probslot features extract --config voc_dino_psa_mlp --out features/voc
    data.root=VOCdevkit/VOC2012``, then train with ``data.feature_cache=features/voc``
    (training refuses a cache of another encoder, block, image size or data).

    Args:
        config: YAML file or preset name of a model with target features (e.g. voc_dino_psa_mlp).
        out: the cache directory to write (splits of the same encoder already there are kept).
        splits: the splits to extract (default: train and val).
        batch_size: images per encoder call.
        chunk_size: items per chunk file.
        device: where the encoder runs (cpu, cuda).
        progress: print progress.
        overrides: dotted config overrides such as data.root=DIR.
    """
    from dataclasses import replace

    from probslot.config import load_config
    from probslot.data.config import build_split, split_description
    from probslot.data.features import extract_features
    from probslot.models import build_model

    cfg = load_config(config, overrides or [])
    model = build_model(cfg.model)
    if not hasattr(model, "feature_spec"):
        raise UsageError(
            f"config {config!r} reconstructs pixels; features extract needs a model with "
            "model.target: features and a frozen encoder (e.g. voc_dino_psa_mlp)"
        )
    data = replace(cfg.data, feature_cache=None)
    names = list(splits or ["train", "val"])
    datasets = {
        s: (build_split(data, s), split_description(cfg.data, s))
        for s in names
        if cfg.data.split_size(s) != 0
    }

    def report(split: str, done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r  {split}: {done}/{total} images", end=end, flush=True)

    print(f"extracting {model.feature_spec()['encoder']} tokens of {', '.join(datasets)} to {out}")
    root = extract_features(
        model,
        datasets,
        out,
        batch_size=batch_size,
        chunk_size=chunk_size,
        device=device,
        progress=report if progress else None,
    )
    print(f"feature cache written to {root}; train with data.feature_cache={root}")
    return root


def features_info(cache: str) -> str:
    """Print a feature cache's encoder, splits, counts and token shapes.

    Example: ``probslot features info --cache features/voc``.

    Args:
        cache: a directory written by probslot features extract.
    """
    from probslot.data.features import FeatureCache, describe_spec

    opened = FeatureCache(cache)
    lines = [f"feature cache {opened.root}: {describe_spec(opened.spec)}"]
    for name in opened.splits:
        entry = opened.split(name)
        lines.append(f"  {name}: {entry['count']} items, tokens {entry['shape'][1:]} float16, "
                     f"{len(entry['chunks'])} chunks")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    return text


#: name → command function; a nested dict is a command group (``probslot data preview``).
from probslot.evaluation.commands import compare, evaluate, report  # noqa: E402
from probslot.posterior.commands import aggregate, prune, sample  # noqa: E402


def experiment(
    name: str,
    scale: str = "cpu",
    seeds: int | None = None,
    out: str | None = None,
    jobs: int = 2,
    emit: str | None = None,
    reuse: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Run a study end to end: train its runs (as processes), evaluate, analyse, report.

    Studies: toy2d, sprites, pruning, injectivity, posterior-stability, tradeoff, clevr6,
    objects-room (docs/results.md shows what each found). Finished runs are reused, so a study
    resumes after a crash; the results folder gets summary.json, table.md, results.md, figures/
    and manifest.json (the exact configs). Example: ``probslot experiment sprites --seeds 3``.

    Args:
        name: the study.
        scale: cpu (this kind of 2-core machine), gpu (one accelerator) or tiny (smoke test).
        seeds: seeds per model (default: the scale's).
        out: results folder (default: results/NAME); one folder holds one configuration.
        jobs: runs trained at once, as separate processes with one thread each (2 suit a
            2-core machine); 0 runs them one after another in this process.
        emit: ``commands`` or ``slurm``: write one command per unfinished run (commands.txt;
            slurm.sh, an array job) instead of running them; rerun afterwards to analyse.
        reuse: copy a run that a study in a sibling folder (e.g. results/sprites beside
            results/tradeoff) finished with exactly the same settings instead of retraining it.
        overrides: dotted overrides for every run's config, e.g. trainer.accelerator=gpu or
            data.root=STORE (toy2d: toy2d.steps=500).
    """
    from probslot.experiments import StudyFailed, run_study

    try:
        result = run_study(name, out, scale, seeds, jobs, emit, overrides or [], reuse=reuse)
    except StudyFailed as err:
        raise ValueError(str(err)) from None
    return result.out


COMMANDS: dict[str, Any] = {
    "train": train,
    "demo": demo,
    "aggregate": aggregate,
    "sample": sample,
    "prune": prune,
    "evaluate": evaluate,
    "compare": compare,
    "report": report,
    "experiment": experiment,
    "data": {"preview": preview, "convert": data_convert, "info": data_info},
    "features": {"extract": features_extract, "info": features_info},
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
        "environment.json",
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
_POSITIONAL = {
    "run_dir": "--run_dir",
    "run_dirs": "--run_dirs+",
    "name": "--name",
    "source": "--source",
    "store": "--store",
}


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
    parameter is ``run_dir``, ``run_dirs``, ``name``, ``source`` or ``store``. (jsonargparse's own positionals,
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
                "take them (train, demo and experiment any section, the analyses data.* only)"
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
