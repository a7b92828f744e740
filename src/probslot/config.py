"""Typed run configuration: one frozen dataclass per concern, loaded from YAML with validation.

A run is described by :class:`RunConfig` = ``data`` (:class:`probslot.data.DataConfig`) +
``model`` (:class:`probslot.models.ModelConfig`) + ``optim`` (:class:`OptimConfig`) +
``trainer`` (:class:`TrainerConfig`). :func:`load_config` reads a YAML preset, applies dotted
overrides (``model.num_slots=5``) and validates everything before any work is done:

* unknown keys raise ``ValueError`` naming the closest valid key (``difflib``);
* values of the wrong type raise ``TypeError`` naming the field, the expected type and the value
  (jsonargparse checks and converts each field against its type hint);
* value ranges are checked by each dataclass's ``__post_init__``.

This module never imports Lightning; :func:`probslot.load_model` uses it to rebuild models.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from probslot.registry import closest
from probslot.validation import check_choice, check_float, check_int

__all__ = [
    "CONFIG_DIR",
    "OptimConfig",
    "PruneConfig",
    "RunConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_override",
    "preset_names",
    "resolve_preset",
    "type_name",
]

T = TypeVar("T")

#: Where the YAML presets live: shipped inside the package (``configs/`` at the repository root links here).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

Precision = Literal["32", "bf16-mixed", "16-mixed"]
Progress = Literal["auto", "bar", "lines", "none"]


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, schedule and weight averaging (authors' code: AdamW 2e-4, betas (0.9, 0.9),
    weight decay 0.01, 5000 warm-up steps, clip 100, skip above 55000, EMA 0.999; notes §7).

    Attributes:
        lr:            peak learning rate after warm-up.
        betas:         AdamW (β1, β2).
        weight_decay:  AdamW decoupled weight decay.
        warmup_steps:  linear warm-up from 0 to ``lr`` over this many steps.
        cosine:        after warm-up, decay with a half cosine to ``min_lr`` at ``trainer.max_steps``;
                       when False the rate stays at ``lr`` (the authors' schedule).
        min_lr:        floor of the cosine decay.
        grad_clip:     clip the global gradient norm to this value (0 disables clipping).
        skip_grad_norm: skip an update whose global gradient norm exceeds this (or is not finite);
                       0 disables skipping.
        ema_decay:     decay of the exponential moving average of the weights used for validation
                       and export (0 disables the average: the raw weights are used).
        aux_mask_weight: weight of an auxiliary curriculum term (0 = off, the paper's loss):
                       cross-entropy from the grouping's responsibilities (attention maps,
                       no gradient) to the decoder's alpha masks, so an additive decoder learns
                       to draw the segments the mixture model found, early in training.
        aux_mask_steps: anneal ``aux_mask_weight`` linearly to 0 over this many steps
                       (0 = keep it constant).
        aux_pi_weight: weight of an auxiliary curriculum term for PSA (0 = off):
                       mean over images of KL(uniform || π_b), the distance of each image's
                       mixing weights π(T) from uniform, which keeps every mixture component
                       alive early in training (a collapsed component has π ≈ 0 and the
                       E-step's log π term then keeps it dead). Ignored for SA.
        aux_pi_steps:  anneal ``aux_pi_weight`` linearly to 0 over this many steps (0 = constant).
        prune_tau_steps: ramp the grouping's ARD threshold ``prune_tau`` (PSA, ARD inside EM)
                       linearly from 0 to its configured value over this many training steps
                       (0 = the full value from the first step). Validation and export always
                       use the configured value. Pruning from step 0 drops the slots of small
                       objects before the encoder has learned to separate them (docs/pruning.md).
        temperature_start: deterministic annealing of PSA's tempered E-step: training starts at
                       this temperature and moves geometrically to the grouping's configured
                       ``temperature`` over ``temperature_steps`` steps (0 = off: the configured
                       value throughout). Validation and export always use the configured value.
                       A high start keeps one slot from taking every token early in training; a
                       lower end gives sharper responsibilities, so a plain background stays in
                       one slot instead of being shared by several (docs/pruning.md).
        temperature_steps: length of that anneal in optimiser steps.
        max_bad_steps: stop training (with a one-line error) after this many consecutive steps
                       whose loss or gradient is not finite; such steps never update the
                       weights. 0 = never stop (they are still skipped and counted).
    """

    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.9)
    weight_decay: float = 0.01
    warmup_steps: int = 5000
    cosine: bool = False
    min_lr: float = 0.0
    grad_clip: float = 100.0
    skip_grad_norm: float = 55000.0
    ema_decay: float = 0.999
    aux_mask_weight: float = 0.0
    aux_mask_steps: int = 0
    aux_pi_weight: float = 0.0
    aux_pi_steps: int = 0
    prune_tau_steps: int = 0
    temperature_start: float = 0.0
    temperature_steps: int = 0
    max_bad_steps: int = 50

    def __post_init__(self) -> None:
        check_float("optim.lr", self.lr, low=0.0, low_open=True, hint="e.g. optim.lr=2e-4")
        for i, beta in enumerate(self.betas):
            check_float(
                f"optim.betas[{i}]", beta, low=0.0, high=1.0, high_open=True, hint="e.g. [0.9, 0.9]"
            )
        check_float("optim.weight_decay", self.weight_decay, low=0.0)
        check_int("optim.warmup_steps", self.warmup_steps, low=0)
        check_float("optim.min_lr", self.min_lr, low=0.0, high=self.lr, hint="at most optim.lr")
        check_float("optim.grad_clip", self.grad_clip, low=0.0, hint="0 = off")
        check_float("optim.skip_grad_norm", self.skip_grad_norm, low=0.0, hint="0 = off")
        check_float(
            "optim.ema_decay", self.ema_decay, low=0.0, high=1.0, high_open=True, hint="0 = off"
        )
        check_float("optim.aux_mask_weight", self.aux_mask_weight, low=0.0, hint="0 = off")
        check_int("optim.aux_mask_steps", self.aux_mask_steps, low=0)
        check_float("optim.aux_pi_weight", self.aux_pi_weight, low=0.0, hint="0 = off")
        check_int("optim.aux_pi_steps", self.aux_pi_steps, low=0)
        check_int("optim.prune_tau_steps", self.prune_tau_steps, low=0, hint="0 = no ramp")
        check_float("optim.temperature_start", self.temperature_start, low=0.0, hint="0 = off")
        check_int("optim.temperature_steps", self.temperature_steps, low=0)
        check_int("optim.max_bad_steps", self.max_bad_steps, low=0, hint="0 = never stop")
        if (self.temperature_start > 0) != (self.temperature_steps > 0):
            raise ValueError(
                "optim.temperature_start and optim.temperature_steps go together (an anneal needs "
                f"both > 0, none needs both 0); got temperature_start={self.temperature_start}, "
                f"temperature_steps={self.temperature_steps}"
            )


@dataclass(frozen=True)
class TrainerConfig:
    """How long and where to train, logging cadence and the hardware (passed to ``lightning.Trainer``).

    Attributes:
        max_steps:   optimiser steps in total (a resumed run continues up to this count).
        val_every:   validate (EMA weights: reconstruction MSE, FG-ARI) every this many steps.
        panel_every: write an image panel to ``RUN/panels/`` every this many steps (0 = never).
        log_every:   log training scalars every this many steps.
        precision:   "32", "bf16-mixed" or "16-mixed" (Lightning mixed precision).
        seed:        seed for torch, numpy and Python (``lightning.seed_everything``).
        deterministic: ask torch for deterministic kernels.
        accelerator, devices, num_nodes, strategy: forwarded to ``lightning.Trainer``.
        output_dir:  parent directory of run directories.
        run_name:    the run directory is ``output_dir/run_name``.
        max_minutes: stop training after this many minutes of wall-clock time (0 = no limit).
        val_batches: number of validation batches per validation (0 = the whole split).
        num_threads: torch intra-op CPU threads (0 = torch's default). On a busy shared CPU,
                     1 thread avoids OpenMP spin-waiting and can be many times faster than 2.
        checkpoint_every: also write ``last.ckpt`` every this many steps (0 = only after each
                     validation), so a killed run loses at most this many steps.
        checkpoint_minutes: also write ``last.ckpt`` when this many minutes have passed since
                     the last one (0 = no time interval).
        progress:    how training reports progress: "auto" (a redrawn bar on a terminal, plain
                     periodic lines otherwise), "bar", "lines" or "none".
    """

    max_steps: int = 100_000
    val_every: int = 1000
    panel_every: int = 1000
    log_every: int = 50
    precision: Precision = "32"
    seed: int = 0
    deterministic: bool = False
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    output_dir: str = "runs"
    run_name: str = "run"
    max_minutes: float = 0.0
    val_batches: int = 0
    num_threads: int = 0
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    progress: Progress = "auto"

    def __post_init__(self) -> None:
        check_int("trainer.max_steps", self.max_steps, low=1)
        check_int("trainer.val_every", self.val_every, low=1)
        check_int("trainer.panel_every", self.panel_every, low=0, hint="0 = never")
        check_int("trainer.log_every", self.log_every, low=1)
        check_choice("trainer.precision", self.precision, typing.get_args(Precision))
        check_int("trainer.seed", self.seed)
        check_int("trainer.num_nodes", self.num_nodes, low=1)
        if not isinstance(self.run_name, str):
            raise TypeError(f"trainer.run_name must be a str; got {self.run_name!r}")
        if not self.run_name or "/" in self.run_name:
            raise ValueError(
                f"trainer.run_name must be a non-empty name without '/'; got {self.run_name!r}"
            )
        check_float("trainer.max_minutes", self.max_minutes, low=0.0, hint="0 = no limit")
        check_int("trainer.val_batches", self.val_batches, low=0, hint="0 = the whole split")
        check_int("trainer.num_threads", self.num_threads, low=0, hint="0 = torch's default")
        check_int("trainer.checkpoint_every", self.checkpoint_every, low=0, hint="0 = off")
        check_float("trainer.checkpoint_minutes", self.checkpoint_minutes, low=0.0, hint="0 = off")
        check_choice("trainer.progress", self.progress, typing.get_args(Progress))


@dataclass(frozen=True)
class PruneConfig:
    """Defaults of ``probslot prune`` for this run's model (each command-line flag overrides its
    field); training ignores this section. See docs/pruning.md.

    Attributes:
        tau:         relevance threshold reported as the headline (None: the model's
                     ``prune_tau`` when it was trained with ARD inside EM, else 0.05).
        merge_dist:  merge slots whose appearance Gaussians coincide, inside EM after its last
                     iteration, at this distance (None: the model's own ``merge_dist``).
        prune_start: in-EM analysis: the first EM iteration after which τ applies (None: the
                     model's own ``prune_start``).
    """

    tau: float | None = None
    merge_dist: float | None = None
    prune_start: int | None = None

    def __post_init__(self) -> None:
        if self.tau is not None:
            check_float("prune.tau", self.tau, low=0.0, high=1.0, high_open=True, hint="or null")
        if self.merge_dist is not None:
            check_float("prune.merge_dist", self.merge_dist, low=0.0, hint="or null")
        if self.prune_start is not None:
            check_int("prune.prune_start", self.prune_start, low=1, hint="an EM iteration, or null")


def _data_config_cls() -> type:
    from probslot.data.config import DataConfig

    return DataConfig


def _model_config_cls() -> type:
    from probslot.models import ModelConfig

    return ModelConfig


@dataclass(frozen=True, repr=False)
class RunConfig:
    """Everything that defines a training run: data, model, optimiser and trainer settings, and
    the defaults of `probslot prune` for its model. Its repr is the YAML of `dump_config`, one
    key a line, the form config files and run directories use."""

    data: Any = field(default_factory=lambda: _data_config_cls()())
    model: Any = field(default_factory=lambda: _model_config_cls()())
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)

    def __post_init__(self) -> None:
        data_size = getattr(self.data, "image_size", None)
        model_hw = getattr(self.model, "image_hw", None)
        if (
            isinstance(data_size, int)
            and model_hw is not None
            and model_hw != (data_size, data_size)
        ):
            raise ValueError(
                f"data.image_size={data_size} but the model takes images of size {list(model_hw)}; "
                f"set model.image_size={data_size} (or data.image_size to match the model)"
            )

    def __repr__(self) -> str:
        body = dump_config(self).rstrip("\n").replace("\n", "\n  ")
        return f"RunConfig(\n  {body}\n)"

    #: field name → dataclass, resolved lazily so that ``probslot.config`` imports stay light.
    @staticmethod
    def section_types() -> dict[str, type]:
        return {
            "data": _data_config_cls(),
            "model": _model_config_cls(),
            "optim": OptimConfig,
            "trainer": TrainerConfig,
            "prune": PruneConfig,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Validate a nested mapping (as read from YAML) and build the run configuration."""
        if not isinstance(data, Mapping):
            raise TypeError(
                f"a run config must be a mapping with keys data, model, optim, trainer (and prune); "
                f"got {type(data).__name__}"
            )
        sections = cls.section_types()
        _reject_unknown(data, list(sections), prefix="")
        kwargs = {
            name: config_from_dict(typ, data.get(name, {}) or {}, prefix=name)
            for name, typ in sections.items()
        }
        return cls(**kwargs)


# --------------------------------------------------------------------------- validation
# Types are checked and converted by jsonargparse (one parser per dataclass, built from its type
# hints): YAML lists become tuples, ints become floats, YAML 1.1 strings such as `1e-3` become
# floats, unions, Literals and containers are checked element by element. Around it sit three
# YAML-specific rules jsonargparse does not know, and the translation of its errors into one line.
def _reject_unknown(data: Mapping[str, Any], valid: list[str], prefix: str) -> None:
    for key in data:
        if key not in valid:
            where = f"{prefix}.{key}" if prefix else str(key)
            hint = closest(str(key), valid)
            suggestion = (
                f" Did you mean {(prefix + '.' if prefix else '') + hint!r}?" if hint else ""
            )
            raise ValueError(
                f"unknown config key {where!r}.{suggestion} "
                f"Valid keys{' of ' + prefix if prefix else ''}: {', '.join(valid)}"
            )


def type_name(tp: Any) -> str:
    """A type hint as a config author reads it: ``'32' | 'bf16-mixed'``, ``tuple[float, float]``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _admits_none(tp: Any) -> bool:
    return tp is Any or tp is type(None) or type(None) in typing.get_args(tp)


def _has_any(tp: Any) -> bool:
    return tp is Any or any(_has_any(a) for a in typing.get_args(tp))


@functools.cache
def _section_parser(cls: type) -> Any:
    """A jsonargparse parser with one typed option per field of the dataclass `cls`."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, as_group=False)
    return parser


#: the field named by a jsonargparse type error: ``Parser key "lr": Expected a <class 'float'>``
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')


def config_from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking keys and types (types with jsonargparse).

    Raises:
        ValueError: a key is not a field of `cls` (the message names the closest field).
        TypeError: a value does not match its field's annotation (names field, type and value).
    """
    from jsonargparse import ArgumentError

    if not isinstance(data, Mapping):
        raise TypeError(
            f"config section {prefix or cls.__name__!r} must be a mapping of "
            f"{cls.__name__} fields; got {data!r} ({type(data).__name__})"
        )
    fields = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    _reject_unknown(data, fields, prefix)
    hints = typing.get_type_hints(cls)
    given = dict(data)

    def mismatch(key: str) -> TypeError:
        where = f"{prefix}.{key}" if prefix else key
        value = data[key]
        return TypeError(
            f"config field {where!r} expects {type_name(hints[key])}; got {value!r} "
            f"({type(value).__name__}). Fix the YAML value or override, e.g. {where}=..."
        )

    for key, value in data.items():
        choices = typing.get_args(hints[key]) if typing.get_origin(hints[key]) is Literal else ()
        if isinstance(value, int) and not isinstance(value, bool) and str(value) in choices:
            given[key] = str(value)  # YAML reads `precision: 32` as an int; take it by its text
        if value is None and not _admits_none(hints[key]):
            raise mismatch(key)  # jsonargparse reads None as "not given" for every option
    try:
        # a deep copy: jsonargparse converts the values of nested dicts in place
        parsed = _section_parser(cls).parse_object(copy.deepcopy(given), defaults=False)
    except ArgumentError as err:
        match = _PARSER_KEY.search(str(err))
        if match is None or match.group(1) not in data:
            message = " ".join(str(err).split())
            raise TypeError(f"config section {prefix or cls.__name__!r}: {message}") from None
        raise mismatch(match.group(1)) from None
    # Free-form (Any) values pass through as written: jsonargparse would read the strings in them
    # as YAML ('on' → True, 'null' → None), which changes factory options and the YAML round trip.
    kwargs = {
        key: copy.deepcopy(given[key]) if _has_any(hints[key]) else parsed[key] for key in given
    }
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> Any:
    """Plain nested dict/list/scalars of a config dataclass, suitable for YAML (tuples → lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


# --------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"model.num_slots=5"`` into (["model", "num_slots"], 5); the value is parsed as YAML."""
    if "=" not in text:
        raise ValueError(
            f"an override must look like section.key=value (e.g. model.num_slots=5); got {text!r}"
        )
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ValueError(
            f"an override must look like section.key=value (e.g. model.num_slots=5); got {text!r}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ValueError(f"override {text!r}: value {raw!r} is not valid YAML ({err})") from None
    return parts, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of the nested mapping `data` with dotted overrides applied.

    Missing intermediate sections are created; the keys themselves are validated later by
    :meth:`RunConfig.from_dict`, which names the closest valid key for typos.
    """
    out: dict[str, Any] = _deep_copy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ValueError(
                    f"override {text!r}: {where!r} is a value ({child!r}), not a section; "
                    f"override it directly with {where}=..."
                )
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


# --------------------------------------------------------------------------- presets and files
def preset_names() -> list[str]:
    """Names of the YAML presets in ``configs/`` (without the ``.yaml`` suffix)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_preset(path_or_name: str | Path) -> Path:
    """A YAML file path, or a preset name from ``configs/`` (``sprites_psa`` or ``sprites_psa.yaml``)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.parent == Path(".") and candidate.is_file():
        return candidate
    names = preset_names()
    hint = closest(path.stem, names)
    suggestion = f" Did you mean preset {hint!r}?" if hint else ""
    raise FileNotFoundError(
        f"config file {str(path_or_name)!r} does not exist.{suggestion} "
        f"Pass a YAML path or one of the presets in {CONFIG_DIR}: {', '.join(names) or '(none)'}"
    )


def load_config(
    path_or_name: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> RunConfig:
    """Load a run config from a YAML file or preset name, apply dotted overrides and validate.

    >>> cfg = load_config("demo", ["model.num_slots=5"])  # doctest: +SKIP
    """
    data: dict[str, Any] = {}
    if path_or_name is not None:
        file = resolve_preset(path_or_name)
        with open(file, encoding="utf-8") as fh:
            try:
                loaded = yaml.safe_load(fh) or {}
            except yaml.YAMLError as err:
                where = getattr(err, "problem_mark", None)
                at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
                problem = getattr(err, "problem", None) or type(err).__name__
                raise ValueError(f"{file} is not valid YAML{at}: {problem}") from None
        if not isinstance(loaded, Mapping):
            raise TypeError(
                f"{file}: a config file must hold a mapping with keys data, model, optim, trainer (and prune); "
                f"got {type(loaded).__name__}"
            )
        data = dict(loaded)
    return RunConfig.from_dict(apply_overrides(data, overrides))


def dump_config(cfg: RunConfig) -> str:
    """YAML text of a resolved config; ``RunConfig.from_dict(yaml.safe_load(text)) == cfg``."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
