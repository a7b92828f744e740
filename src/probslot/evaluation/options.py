"""Options of `evaluate_run` (`EvalConfig`) and `compare_runs` (`CompareConfig`).

They sit below both functions and their typed results (`probslot.evaluation.results`), which
record the options a result was computed with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from probslot.validation import check_choice, check_int, check_positive_int

__all__ = ["CompareConfig", "EvalConfig"]

_Options = TypeVar("_Options", "EvalConfig", "CompareConfig")


def _saved(cls: type[_Options], data: Mapping[str, Any]) -> _Options:
    """`cls` from a saved dict: unknown keys dropped, JSON lists back to tuples."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class EvalConfig:
    """Options of `evaluate_run`.

    Attributes:
        split: data split to evaluate (``test``, ``val`` or ``train``).
        max_images: evaluate only the first ``max_images`` images (None: the whole split).
        batch_size: images per forward pass.
        inception: path to Inception weights for FID/KID (see `InceptionFeatures.from_file`);
            None skips FID/KID (a note is written instead).
        num_panels: images shown in the panels.
        contrast_images: images on which compositional contrast is computed (Jacobians are
            costly: k·d Jacobian-vector products per image).
        posterior_samples: scenes drawn from the aggregate posterior (panels and sample FID).
        seed: seed of the sampling and of the identifiability split.
        progress: show a progress bar.
        draw: the fixed draw of the grouping's random initial slots behind the figures
            (`probslot.nn.layers.slot_noise`): inference is deterministic, and another number
            is another draw.
        draws: evaluate this many draws (``draw``, ``draw + 1``, ...) and add their mean ± std
            for FG-ARI, mBO, MSE and SMCC as `EvalResult.draws` (``eval.json["draws"]``: how
            much PSA's initial slots move the figures); the rest of the result is from ``draw``.
        data_overrides: dotted ``data.*`` settings applied to the run's data config before the
            split is built (`probslot.runs`), e.g. ``("data.num_test=1024",)``.
    """

    split: str = "test"
    max_images: int | None = None
    batch_size: int = 32
    inception: str | None = None
    num_panels: int = 8
    contrast_images: int = 8
    posterior_samples: int = 64
    seed: int = 0
    progress: bool = True
    draw: int = 0
    draws: int = 1
    data_overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice("split", self.split, ("train", "val", "test"))
        check_int("draw", self.draw, low=0)
        check_int("draws", self.draws, low=1)
        for name, low in (
            ("batch_size", 1),
            ("num_panels", 1),
            ("contrast_images", 0),
            ("posterior_samples", 0),
            ("seed", 0),
        ):
            check_int(name, getattr(self, name), low=low)
        if self.max_images is not None:
            check_positive_int("max_images", self.max_images)
        if self.inception is not None and not Path(self.inception).is_file():
            raise FileNotFoundError(
                f"Inception weights {self.inception!r} do not exist. Supply a TorchScript "
                "Inception file (e.g. inception-2015-12-05.pt) with --inception PATH, or omit "
                "--inception to skip FID/KID"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalConfig:
        """The options as a result file saved them (`EvalResult.config`): keys this version
        does not know are dropped, missing ones take their defaults. The Inception file is a
        record of where the weights were: it need not exist where the file is read."""
        config = _saved(cls, {**data, "inception": None})
        object.__setattr__(config, "inception", data.get("inception"))  # kept, not checked
        return config


@dataclass(frozen=True)
class CompareConfig:
    """Options of `compare_runs`.

    Attributes:
        split: data split encoded by every run (the first run's data config).
        max_images: use the first ``max_images`` images (None: the whole split).
        batch_size: images per forward pass.
        posterior_samples: Monte Carlo draws for the posterior KL.
        seed: seed of the identifiability split and of the posterior draws.
        progress: show a progress bar.
        data_overrides: dotted ``data.*`` settings applied to the first run's data config
            (`probslot.runs`).
    """

    split: str = "test"
    max_images: int | None = None
    batch_size: int = 64
    posterior_samples: int = 2000
    seed: int = 0
    progress: bool = True
    data_overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice("split", self.split, ("train", "val", "test"))
        for name in ("batch_size", "posterior_samples"):
            check_positive_int(name, getattr(self, name))
        if self.max_images is not None:
            check_positive_int("max_images", self.max_images)
        check_int("seed", self.seed, low=0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompareConfig:
        """The options as a result file saved them (`Comparison.config`): keys this version does
        not know are dropped, missing ones take their defaults."""
        return _saved(cls, data)
