"""Run directories, safetensors export and :func:`load_model`.

Layout of a run directory (see ``docs/architecture.md``)::

    runs/NAME/
      config.yaml          resolved RunConfig
      last.ckpt, best.ckpt Lightning checkpoints (written atomically)
      model.safetensors    EMA weights for export
      MODEL_CARD.md        what was trained, on what, with which figures
      metrics.json         final validation figures
      panels/step_*.png    input | reconstruction | masks | slots
      logs/                TensorBoard and CSV logs

Nothing here imports Lightning or :mod:`probslot.training`: a model is rebuilt from
``config.yaml`` + ``model.safetensors`` alone. Atomic writes live in :mod:`probslot.atomic`
(the lowest layer, so datasets and model code can write files without importing this module,
which sits above :mod:`probslot.config`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probslot.atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "RunPaths",
    "load_model",
    "load_run_config",
    "save_model_weights",
    "write_metrics",
    "write_model_card",
]


@dataclass(frozen=True)
class RunPaths:
    """The files of one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def last_ckpt(self) -> Path:
        return self.root / "last.ckpt"

    @property
    def best_ckpt(self) -> Path:
        return self.root / "best.ckpt"

    @property
    def weights(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def model_card(self) -> Path:
        return self.root / "MODEL_CARD.md"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def panels(self) -> Path:
        return self.root / "panels"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


# --------------------------------------------------------------------------- metrics
def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write `metrics` as indented JSON with sorted keys to `path` (atomically)."""
    return atomic_write_text(path, json.dumps(dict(metrics), indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- weights
def save_model_weights(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``model.state_dict()`` as safetensors (atomically)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write_bytes(path, save(state, metadata=metadata))


def _run_dir(path: str | Path) -> Path:
    """The run directory named by `path` (the directory itself, or any file inside it)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"run directory {str(p)!r} does not exist. Pass a run directory written by "
            f"`probslot train` or `probslot demo` (e.g. runs/demo)"
        )
    return p if p.is_dir() else p.parent


def load_run_config(path: str | Path) -> Any:
    """The validated :class:`probslot.config.RunConfig` of a run directory."""
    from probslot.config import load_config

    paths = RunPaths(_run_dir(path))
    if not paths.config.is_file():
        raise FileNotFoundError(
            f"{str(paths.root)!r} has no config.yaml, so it is not a run directory. Pass the "
            f"directory that `probslot train` wrote (it holds config.yaml and model.safetensors)"
        )
    return load_config(paths.config)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a trained :class:`probslot.models.SlotAutoencoder` from a run directory.

    Reads ``config.yaml`` (the model section) and ``model.safetensors`` (the EMA weights); the
    training code is not imported. The model is returned in eval mode.

    Raises:
        FileNotFoundError: `path` is missing, or lacks config.yaml / model.safetensors.
    """
    from safetensors.torch import load_file

    from probslot.models import build_model

    cfg = load_run_config(path)
    paths = RunPaths(_run_dir(path))
    if not paths.weights.is_file():
        raise FileNotFoundError(
            f"{str(paths.root)!r} has no model.safetensors (training did not finish or was "
            f"interrupted). Resume it with `probslot train --config {paths.config} --resume`"
        )
    model = build_model(cfg.model)
    state = load_file(str(paths.weights), device=str(map_location))
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


# --------------------------------------------------------------------------- model card
def write_model_card(paths: RunPaths, cfg: Any, metrics: Mapping[str, Any]) -> Path:
    """A short Markdown card: what was trained, on what data, for how long, with which figures."""
    from probslot.config import config_to_dict

    c = config_to_dict(cfg)
    model, data, optim, trainer = c["model"], c["data"], c["optim"], c["trainer"]

    def _row(d: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in d.items())

    figures = "\n".join(
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in sorted(metrics.items())
    )
    text = f"""# Model card: {paths.root.name}

Slot autoencoder trained with probslot (Probabilistic Slot Attention, Kori et al., NeurIPS 2024).

- **Model**: {_row(model)}
- **Data**: {_row(data)}
- **Optimiser**: {_row(optim)}
- **Training**: {_row(trainer)}
- **Weights**: `model.safetensors` holds the exponential moving average of the weights
  (decay {optim.get("ema_decay")}); rebuild with `probslot.load_model("{paths.root}")`.

## Validation figures (EMA weights, held-out split)

| metric | value |
|---|---|
{figures}

FG-ARI: adjusted Rand index over foreground pixels between the argmax of the decoder masks
(or attention maps for non-additive decoders) and the ground-truth object labels.
"""
    return atomic_write_text(paths.model_card, text)
