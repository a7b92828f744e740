"""Typed run configuration: one frozen dataclass per concern, loaded from YAML with validation.

A run is described by :class:`RunConfig` = ``data`` (:class:`probslot.data.DataConfig`) +
``model`` (:class:`probslot.models.ModelConfig`) + ``optim`` (:class:`OptimConfig`) +
``trainer`` (:class:`TrainerConfig`). :func:`load_config` reads a YAML preset, applies dotted
overrides (``model.num_slots=5``) and validates everything before any work is done:

* unknown keys raise ``ValueError`` naming the closest valid key (``difflib``);
* values of the wrong type raise ``TypeError`` naming the field, the expected type and the value;
* value ranges are checked by each dataclass's ``__post_init__``.

This module never imports Lightning; :func:`probslot.load_model` uses it to rebuild models.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from probslot.registry import closest

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
]

T = TypeVar("T")

#: Where the YAML presets live: shipped inside the package (``configs/`` at the repository root links here).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

Precision = Literal["32", "bf16-mixed", "16-mixed"]


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


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

    def __post_init__(self) -> None:
        _check(self.lr > 0, f"optim.lr must be > 0; got {self.lr}. Use e.g. optim.lr=2e-4")
        _check(
            all(0.0 <= b < 1.0 for b in self.betas),
            f"optim.betas must both lie in [0, 1); got {self.betas}. Use e.g. optim.betas=[0.9,0.9]",
        )
        _check(self.weight_decay >= 0, f"optim.weight_decay must be >= 0; got {self.weight_decay}")
        _check(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0; got {self.warmup_steps}")
        _check(
            0 <= self.min_lr <= self.lr,
            f"optim.min_lr must lie in [0, optim.lr={self.lr}]; got {self.min_lr}",
        )
        _check(self.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 = off); got {self.grad_clip}")
        _check(
            self.skip_grad_norm >= 0,
            f"optim.skip_grad_norm must be >= 0 (0 = off); got {self.skip_grad_norm}",
        )
        _check(
            0.0 <= self.ema_decay < 1.0,
            f"optim.ema_decay must lie in [0, 1) (0 = no averaging); got {self.ema_decay}",
        )
        _check(
            self.aux_mask_weight >= 0,
            f"optim.aux_mask_weight must be >= 0 (0 = off); got {self.aux_mask_weight}",
        )
        _check(
            self.aux_mask_steps >= 0,
            f"optim.aux_mask_steps must be >= 0; got {self.aux_mask_steps}",
        )
        _check(
            self.aux_pi_weight >= 0,
            f"optim.aux_pi_weight must be >= 0 (0 = off); got {self.aux_pi_weight}",
        )
        _check(self.aux_pi_steps >= 0, f"optim.aux_pi_steps must be >= 0; got {self.aux_pi_steps}")
        _check(
            self.prune_tau_steps >= 0,
            f"optim.prune_tau_steps must be >= 0 (0 = no ramp); got {self.prune_tau_steps}",
        )
        _check(
            self.temperature_start >= 0,
            f"optim.temperature_start must be >= 0 (0 = no anneal); got {self.temperature_start}",
        )
        _check(
            self.temperature_steps >= 0,
            f"optim.temperature_steps must be >= 0; got {self.temperature_steps}",
        )
        _check(
            (self.temperature_start > 0) == (self.temperature_steps > 0),
            "optim.temperature_start and optim.temperature_steps go together (an anneal needs "
            f"both > 0, none needs both 0); got temperature_start={self.temperature_start}, "
            f"temperature_steps={self.temperature_steps}",
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

    def __post_init__(self) -> None:
        _check(self.max_steps >= 1, f"trainer.max_steps must be >= 1; got {self.max_steps}")
        _check(self.val_every >= 1, f"trainer.val_every must be >= 1; got {self.val_every}")
        _check(self.panel_every >= 0, f"trainer.panel_every must be >= 0; got {self.panel_every}")
        _check(self.log_every >= 1, f"trainer.log_every must be >= 1; got {self.log_every}")
        _check(self.num_nodes >= 1, f"trainer.num_nodes must be >= 1; got {self.num_nodes}")
        _check(
            bool(self.run_name) and "/" not in self.run_name,
            f"trainer.run_name must be a non-empty name without '/'; got {self.run_name!r}",
        )
        _check(self.max_minutes >= 0, f"trainer.max_minutes must be >= 0; got {self.max_minutes}")
        _check(self.val_batches >= 0, f"trainer.val_batches must be >= 0; got {self.val_batches}")
        _check(self.num_threads >= 0, f"trainer.num_threads must be >= 0; got {self.num_threads}")


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
            _check(0.0 <= self.tau < 1.0, f"prune.tau must be in [0, 1) or null; got {self.tau}")
        if self.merge_dist is not None:
            _check(
                self.merge_dist >= 0,
                f"prune.merge_dist must be >= 0 or null; got {self.merge_dist}",
            )
        if self.prune_start is not None:
            _check(
                self.prune_start >= 1,
                f"prune.prune_start must be an EM iteration >= 1 or null; got {self.prune_start}",
            )


def _data_config_cls() -> type:
    from probslot.data import DataConfig

    return DataConfig


def _model_config_cls() -> type:
    from probslot.models import ModelConfig

    return ModelConfig


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run: data, model, optimiser and trainer settings, and
    the defaults of `probslot prune` for its model."""

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


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class _Mismatch(Exception):
    pass


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Return `value` converted to `tp` (YAML lists → tuples, ints → floats) or raise _Mismatch."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        # YAML reads `precision: 32` as an int; accept it for the string literal "32".
        if not isinstance(value, bool) and str(value) in typing.get_args(tp):
            return str(value)
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, where)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise _Mismatch
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (arg,) = typing.get_args(tp) or (Any,)
        return [_coerce(arg, v, where) for v in value]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch
        return config_from_dict(tp, value, prefix=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML (YAML 1.1) reads `1e-3` (no dot) as a string; accept plain numeric strings.
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking keys and types.

    Raises:
        ValueError: a key is not a field of `cls` (the message names the closest field).
        TypeError: a value does not match its field's annotation (names field, type and value).
    """
    if not isinstance(data, Mapping):
        raise TypeError(
            f"config section {prefix or cls.__name__!r} must be a mapping of "
            f"{cls.__name__} fields; got {data!r} ({type(data).__name__})"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    _reject_unknown(data, list(fields), prefix)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        tp = hints.get(key, Any)
        try:
            kwargs[key] = _coerce(tp, value, where)
        except _Mismatch:
            raise TypeError(
                f"config field {where!r} expects {_type_name(tp)}; got {value!r} "
                f"({type(value).__name__}). Fix the YAML value or override, e.g. {where}=..."
            ) from None
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
            loaded = yaml.safe_load(fh) or {}
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
