"""ModelConfig: a typed, validated, dict-serialisable description of a slot autoencoder + presets."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from probslot.registry import Registry, closest, did_you_mean
from probslot.validation import check_positive_int
from probslot.validation import is_int as _is_int

__all__ = ["PRESETS", "ModelConfig", "Preset", "available_presets", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """A named model from the paper: component names, their options, iterations and likelihood."""

    name: str
    description: str
    grouping: str
    decoder: str
    likelihood: str
    iters: int
    encoder: str = "cnn"
    grouping_kwargs: Mapping[str, Any] = field(default_factory=dict)


_PRESETS = (
    Preset(
        "SA",
        "Slot Attention (Locatello et al. 2020) + additive spatial-broadcast decoder",
        grouping="sa",
        decoder="broadcast",
        likelihood="dgauss",
        iters=3,
    ),
    Preset(
        "SA-NoA",
        "Slot Attention + non-additive decoder (feature-level compositing, notes §11.5)",
        grouping="sa",
        decoder="noa",
        likelihood="dgauss",
        iters=3,
    ),
    Preset(
        "PSA",
        "PSA base, Algorithm 2 (EM on the tokens, no key/value projections) + additive decoder",
        grouping="psa",
        decoder="broadcast",
        likelihood="dgauss",
        iters=5,
    ),
    Preset(
        "PSA-Proj",
        "PSA with key/value projections, Algorithm 1 = 3 + additive decoder",
        grouping="psa-proj",
        decoder="broadcast",
        likelihood="mse",
        iters=5,
    ),
    Preset(
        "PSA-NoA",
        "PSA-Proj grouping (the paper's definition) + non-additive decoder; the authors' code "
        "uses the base PSA here instead (notes §11.4): set grouping='psa' to match it",
        grouping="psa-proj",
        decoder="noa",
        likelihood="dgauss",
        iters=5,
    ),
    Preset(
        "AE",
        "additive autoencoder without slot attention (Brady et al. 2023; the paper's Table 2 "
        "'AE'): an MLP on the pooled token grid gives the K slots + additive decoder",
        grouping="ae",
        decoder="broadcast",
        likelihood="mse",
        iters=1,
    ),
)
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}


def available_presets() -> list[str]:
    """Names of the model presets: SA, SA-NoA, PSA, PSA-Proj, PSA-NoA, AE."""
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    if not isinstance(name, str) or name not in PRESETS:
        names = available_presets()
        hint = closest(name, names) if isinstance(name, str) else None
        if hint is None and isinstance(name, str):
            hint = next((n for n in names if n.lower() == name.lower()), None)
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        raise ValueError(
            f"unknown model preset {name!r}.{suggestion} Available: {', '.join(names)}"
        )
    return PRESETS[name]


# Options the builder fills from ModelConfig fields; giving them in a kwargs dict is an error.
_RESERVED = {
    "encoder": {"in_channels": "the model always takes RGB images"},
    "grouping": {
        "num_slots": "set ModelConfig.num_slots",
        "dim": "it is the encoder's out_dim",
        "slot_dim": "set ModelConfig.slot_dim",
        "iters": "set ModelConfig.iters",
    },
    "decoder": {"slot_dim": "set ModelConfig.slot_dim", "image_size": "set ModelConfig.image_size"},
    "likelihood": {},
}


#: ... and those it fills for a feature decoder (target: features)
_RESERVED_FEATURE_DECODER = {
    "slot_dim": "set ModelConfig.slot_dim",
    "grid": "it is the encoder's token grid at ModelConfig.image_size",
    "feature_dim": "it is the encoder's out_dim",
}


#: Grouping options renamed since they were introduced: old name → (new name, value map, why).
#: A config (or a run directory's config.yaml) that uses an old name still loads; it gets a
#: one-line deprecation message and the new option.
_RENAMED_GROUPING_OPTIONS: dict[str, tuple[str, Callable[[Any], Any], str]] = {
    "coords_in_estep": (
        "coord_weight",
        lambda v: 1.0 if v else 0.0,
        "the power of the positions' likelihood in the E-step (true = 1.0, false = 0.0)",
    ),
}


def _renamed_grouping_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` with old grouping option names mapped to their replacements (with a warning)."""
    import warnings

    out = dict(kwargs)
    for old, (new, convert, meaning) in _RENAMED_GROUPING_OPTIONS.items():
        if old not in out:
            continue
        value = out.pop(old)
        if new in out:
            raise ValueError(
                f"grouping_kwargs sets both {old!r} (deprecated) and its replacement {new!r}; "
                f"keep only {new!r}"
            )
        out[new] = convert(value)
        warnings.warn(
            f"grouping option {old}={value!r} is deprecated: use {new}={out[new]!r} ({meaning})",
            FutureWarning,
            stacklevel=4,
        )
    return out


Target = Literal["pixels", "features"]


def _registries(target: str = "pixels") -> dict[str, Registry]:
    """The registry of each component kind; feature targets take `FEATURE_DECODERS`."""
    from probslot.decoders import DECODERS, FEATURE_DECODERS
    from probslot.encoders import ENCODERS
    from probslot.models.likelihood import LIKELIHOODS
    from probslot.nn import GROUPINGS

    return {
        "encoder": ENCODERS,
        "grouping": GROUPINGS,
        "decoder": FEATURE_DECODERS if target == "features" else DECODERS,
        "likelihood": LIKELIHOODS,
    }


def _check_target(cfg: ModelConfig) -> None:
    """`target` is a choice, the decoder fits it, and the feature-only options go with it."""
    from probslot.decoders import DECODERS, FEATURE_DECODERS
    from probslot.validation import check_choice

    check_choice("ModelConfig.target", cfg.target, ("pixels", "features"))
    if cfg.target == "features" and cfg.decoder is None:
        raise ValueError(
            "ModelConfig.target: features needs a feature decoder; set decoder to one of "
            f"{', '.join(FEATURE_DECODERS.available())} (presets draw images)"
        )
    if isinstance(cfg.decoder, str):
        wrong, fix = (DECODERS, "target: pixels")
        if cfg.target != "features":
            wrong, fix = FEATURE_DECODERS, "target: features"
        if cfg.decoder in wrong:
            kind = "images" if wrong is DECODERS else "the encoder's features"
            right = FEATURE_DECODERS if wrong is DECODERS else DECODERS
            raise ValueError(
                f"decoder {cfg.decoder!r} reconstructs {kind} but ModelConfig.target is "
                f"{cfg.target!r}; set {fix} or a decoder of {', '.join(right.available())}"
            )
    if cfg.token_mlp is not None:
        check_positive_int("ModelConfig.token_mlp", cfg.token_mlp)
        if cfg.target != "features":
            raise ValueError(
                "ModelConfig.token_mlp is the MLP between frozen encoder features and the "
                f"grouping (DINOSAUR); it needs target: features, got target {cfg.target!r}"
            )
    if cfg.target == "features" and cfg.likelihood not in (None, "mse"):
        raise ValueError(
            f"feature reconstruction is scored by the mean squared error; got likelihood "
            f"{cfg.likelihood!r}. Set likelihood: mse (or leave it unset)"
        )


def _check_keep_gate(cfg: ModelConfig) -> None:
    """``keep_gate`` is None or a dict of `probslot.nn.KeepGate` options, with valid values, on
    a pixel model whose decoder is additive (the gates weigh its alpha masks)."""
    from probslot.decoders import DECODERS, AdditiveDecoder
    from probslot.nn import KeepGate
    from probslot.validation import check_float

    gate = cfg.keep_gate
    if gate is None:
        return
    if not isinstance(gate, dict) or not all(isinstance(key, str) for key in gate):
        raise TypeError(
            "ModelConfig.keep_gate must be None (no gate) or a dict of options such as "
            f"{{'penalty': 0.1, 'temperature': 1.0, 'hidden': 64}} ({{}}: the defaults); got {gate!r}"
        )
    accepted = [a for a in inspect.signature(KeepGate).parameters if a != "inner"]
    for key in gate:
        if key not in accepted:
            raise ValueError(
                f"unknown option {key!r} in ModelConfig.keep_gate.{did_you_mean(key, accepted)} "
                f"Accepted: {', '.join(accepted)}"
            )
    if "penalty" in gate:
        check_float("ModelConfig.keep_gate.penalty", gate["penalty"], low=0.0)
    if "temperature" in gate:
        check_float(
            "ModelConfig.keep_gate.temperature", gate["temperature"], low=0.0, low_open=True
        )
    if "hidden" in gate:
        check_positive_int("ModelConfig.keep_gate.hidden", gate["hidden"])
    if cfg.target != "pixels":
        raise ValueError(
            "ModelConfig.keep_gate weighs the alpha masks of an image decoder; it needs target: "
            f"pixels, got target {cfg.target!r}"
        )
    decoder = cfg._resolved_fields()["decoder"]
    factory = DECODERS.get(decoder)
    if not (inspect.isclass(factory) and issubclass(factory, AdditiveDecoder)):
        additive = [
            name
            for name in DECODERS.available()
            if inspect.isclass(DECODERS.get(name))
            and issubclass(DECODERS.get(name), AdditiveDecoder)
        ]
        raise ValueError(
            f"ModelConfig.keep_gate weighs the alpha masks of an additive decoder (AdaSlot); "
            f"decoder {decoder!r} has none. Set decoder to one of {', '.join(additive)}, or "
            "keep_gate: null"
        )


def _accepted_options(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword options a factory accepts, or None when it takes **kwargs (cannot check)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


@dataclass(frozen=True)
class ModelConfig:
    """Which slot autoencoder to build (`build_model`), validated on construction.

    Either a ``preset`` (SA, SA-NoA, PSA, PSA-Proj, PSA-NoA, AE) or explicit component names; an
    explicit name overrides the preset's, and each ``*_kwargs`` dict is merged over the preset's.
    Serialisable: ``ModelConfig(**dataclasses.asdict(cfg)) == cfg`` (YAML-safe: only str, int,
    list, dict, None).

    Attributes:
        preset: preset name, or None to give every component explicitly.
        encoder / grouping / decoder: registry names (`probslot.encoders.ENCODERS`,
            `probslot.nn.GROUPINGS`, `probslot.decoders.DECODERS`); None = the preset's.
        encoder_kwargs / grouping_kwargs / decoder_kwargs: options for the factories, e.g.
            ``{"strides": [1, 2, 2, 1]}``; the encoder's ``out_dim`` defaults to ``slot_dim``.
        image_size: H (square) or [H, W] of the images the model takes.
        num_slots: default number of slots K.
        slot_dim: slot size d (must equal the encoder's out_dim for the base ``psa``).
        iters: grouping iterations T; None = the preset's (PSA 5, SA 3), else 3.
        likelihood: ``mse`` or ``dgauss``; None = the preset's (else ``mse``).
        likelihood_kwargs: options, e.g. ``{"autoregressive": True}`` for ``dgauss``.
        target: ``pixels`` (reconstruct the image) or ``features`` (reconstruct a frozen
            encoder's tokens with a decoder of `probslot.decoders.FEATURE_DECODERS`: DINOSAUR,
            the paper's real-image setup; the loss is then the mean squared error).
        token_mlp: hidden width of DINOSAUR's MLP from the frozen features to the grouping
            (LayerNorm → Linear → ReLU → Linear to ``slot_dim``); None = no MLP. Features only.
        keep_gate: None (default: no gate), or the options of a learned keep gate
            (`probslot.nn.KeepGate`, AdaSlot) around the grouping: ``penalty`` (0.1, the weight
            of the sparsity term penalty · mean(keep_prob) in the training loss),
            ``temperature`` (1.0, of the Gumbel-sigmoid) and ``hidden`` (64, the score MLP's
            width); ``{}`` takes all three defaults. Needs an additive decoder.
    """

    preset: str | None = "PSA"
    encoder: str | None = None
    grouping: str | None = None
    decoder: str | None = None
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    grouping_kwargs: dict[str, Any] = field(default_factory=dict)
    decoder_kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int | list[int] = 32
    num_slots: int = 5
    slot_dim: int = 64
    iters: int | None = None
    likelihood: str | None = None
    likelihood_kwargs: dict[str, Any] = field(default_factory=dict)
    target: Target = "pixels"
    token_mlp: int | None = None
    keep_gate: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.preset is not None:
            get_preset(self.preset)
        _check_target(self)
        if isinstance(self.grouping_kwargs, dict):
            object.__setattr__(
                self, "grouping_kwargs", _renamed_grouping_options(self.grouping_kwargs)
            )
        self._normalise_image_size()
        for name in ("num_slots", "slot_dim"):
            value = getattr(self, name)
            check_positive_int(f"ModelConfig.{name}", value)
        if self.iters is not None:
            check_positive_int("ModelConfig.iters", self.iters)
        registries = _registries(self.target)
        reserved = dict(_RESERVED)
        if self.target == "features":
            reserved["decoder"] = _RESERVED_FEATURE_DECODER
        for kind, registry in registries.items():
            name = getattr(self, kind)
            if name is not None and not isinstance(name, str):
                raise TypeError(
                    f"ModelConfig.{kind} must be a registry name (str) or None; got {name!r}"
                )
            if name is not None:
                registry.get(name)  # unknown name → ValueError with "did you mean"
            kwargs = getattr(self, f"{kind}_kwargs")
            if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
                raise TypeError(
                    f"ModelConfig.{kind}_kwargs must be a dict with str keys; got {kwargs!r}"
                )
            for key in kwargs:
                if key in reserved[kind]:
                    raise ValueError(
                        f"ModelConfig.{kind}_kwargs must not set {key!r} ({reserved[kind][key]}); "
                        f"got {kind}_kwargs={kwargs!r}"
                    )
        if self.preset is None:
            missing = [k for k in ("encoder", "grouping", "decoder") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"ModelConfig without a preset needs explicit {', '.join(missing)}; got None. "
                    f"Set them or choose a preset from {', '.join(available_presets())}"
                )
        _check_keep_gate(self)
        # Check option names against the resolved factories (catches typos before building).
        resolved = self._resolved_fields()
        for kind, registry in registries.items():
            factory = registry.get(resolved[kind])
            accepted = _accepted_options(factory)
            if accepted is None:
                continue
            for key in resolved[f"{kind}_kwargs"]:
                if key not in accepted:
                    options = [a for a in accepted if a not in reserved[kind]]
                    suggestion = did_you_mean(key, options)
                    raise ValueError(
                        f"unknown option {key!r} for {kind} {resolved[kind]!r} in "
                        f"ModelConfig.{kind}_kwargs.{suggestion} Accepted: {', '.join(options)}"
                    )

    def _normalise_image_size(self) -> None:
        size = self.image_size
        if _is_int(size):
            if size < 1:
                raise ValueError(f"ModelConfig.image_size must be positive; got {size}")
            return
        if isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(s) for s in size):
            if min(size) < 1:
                raise ValueError(f"ModelConfig.image_size must be positive; got {list(size)}")
            # Lists, not tuples, so that asdict(cfg) dumps to YAML with yaml.safe_dump.
            object.__setattr__(self, "image_size", [int(size[0]), int(size[1])])
            return
        raise TypeError(
            f"ModelConfig.image_size must be an int or a [height, width] list of ints; got {size!r}"
        )

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the images the model takes."""
        size = self.image_size
        return (size, size) if isinstance(size, int) else (size[0], size[1])

    def _resolved_fields(self) -> dict[str, Any]:
        preset = PRESETS[self.preset] if self.preset is not None else None

        def pick(explicit: Any, from_preset: Any, default: Any) -> Any:
            if explicit is not None:
                return explicit
            return from_preset if preset is not None else default

        grouping_kwargs = dict(preset.grouping_kwargs) if preset is not None else {}
        grouping_kwargs.update(self.grouping_kwargs)
        return {
            "encoder": pick(self.encoder, preset and preset.encoder, None),
            "grouping": pick(self.grouping, preset and preset.grouping, None),
            "decoder": pick(self.decoder, preset and preset.decoder, None),
            "likelihood": "mse"
            if self.target == "features"
            else pick(self.likelihood, preset and preset.likelihood, "mse"),
            "iters": pick(self.iters, preset and preset.iters, 3),
            "encoder_kwargs": dict(self.encoder_kwargs),
            "grouping_kwargs": grouping_kwargs,
            "decoder_kwargs": dict(self.decoder_kwargs),
            "likelihood_kwargs": dict(self.likelihood_kwargs),
        }

    def resolve(self) -> ModelConfig:
        """The equivalent config with ``preset=None`` and every choice explicit (what gets built).

        The encoder's ``out_dim`` is filled with ``slot_dim`` when the encoder accepts it and it
        is not given, so tokens and slots have one size unless asked otherwise.
        """
        fields = self._resolved_fields()
        from probslot.encoders import ENCODERS

        accepted = _accepted_options(ENCODERS.get(fields["encoder"]))
        if (accepted is None or "out_dim" in accepted) and "out_dim" not in fields[
            "encoder_kwargs"
        ]:
            fields["encoder_kwargs"]["out_dim"] = self.slot_dim
        return dataclasses.replace(self, preset=None, **fields)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (deep copy); ``ModelConfig(**cfg.to_dict()) == cfg``."""
        return dataclasses.asdict(self)
