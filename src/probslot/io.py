"""Run directories, safetensors export and :func:`load_model`.

Layout of a run directory (see ``docs/architecture.md``)::

    runs/NAME/
      config.yaml          resolved RunConfig
      last.ckpt, best.ckpt Lightning checkpoints (written atomically)
      model.safetensors    EMA weights for export
  environment.json     versions, torch build, threads, machine, seed (one record per session)
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
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probslot.atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "RunPaths",
    "canonical_safetensors",
    "load_model",
    "load_run_config",
    "read_weights",
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
def canonical_safetensors(raw: bytes) -> bytes:
    """`raw` safetensors bytes with a deterministic header: the same tensors and metadata give
    the same bytes (and sha256). ``safetensors`` writes the metadata in hash-map order, which
    changes from one process to the next; the tensor data and its offsets are kept as they are."""
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the 8-byte alignment safetensors keeps for the data
    return struct.pack("<Q", len(text)) + text + raw[8 + length :]


def save_model_weights(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``model.state_dict()`` as safetensors (atomically, with a canonical header, so two
    runs with identical weights write identical files)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write_bytes(path, canonical_safetensors(save(state, metadata=metadata)))


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
    from probslot.models import build_model

    cfg = load_run_config(path)
    paths = RunPaths(_run_dir(path))
    if not paths.weights.is_file():
        raise FileNotFoundError(
            f"{str(paths.root)!r} has no model.safetensors (training did not finish or was "
            f"interrupted). Resume it with `probslot train --config {paths.config} --resume`"
        )
    model = build_model(cfg.model)
    state = read_weights(paths.weights, device=str(map_location))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise ValueError(
            f"{str(paths.weights)!r} does not hold the weights of the model in "
            f"{str(paths.config)!r} ({first}); the files come from different runs"
        ) from None
    return model.to(map_location).eval()


def read_weights(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a ``model.safetensors`` (safetensors never runs code from the file).

    Raises:
        ValueError: the file is truncated, corrupt or not a safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except SafetensorError as err:
        raise ValueError(
            f"{str(path)!r} is not a readable safetensors file ({err}); it is truncated or "
            "was not written by probslot. Re-export it by resuming the run, or retrain"
        ) from None


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
