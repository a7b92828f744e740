"""One tiny run configuration shared by the tests that train or fake a run directory.

Importable from any test module (``pythonpath = ["tests"]`` in pyproject.toml). Each test adapts
the sizes it needs with `tiny_config(changes)`; pairwise-distinct sizes keep swapped axes visible.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

TINY_RUN: dict[str, Any] = {
    "data": {
        "name": "sprites",
        "num_train": 11,
        "num_val": 5,
        "num_test": 23,
        "image_size": 16,
        "max_objects": 2,
        "batch_size": 7,
    },
    "model": {
        "preset": "PSA",
        "likelihood": "mse",
        "image_size": 16,
        "num_slots": 3,
        "slot_dim": 5,
        "iters": 2,
        "encoder_kwargs": {"channels": [4, 6], "kernel_sizes": [3, 3], "strides": [1, 2]},
        "decoder_kwargs": {"channels": [4, 6], "init_size": 8, "kernel_size": 3},
    },
    "optim": {"lr": 0.001, "warmup_steps": 2, "ema_decay": 0.9},
    "trainer": {"max_steps": 3, "val_every": 2, "panel_every": 2, "log_every": 1},
}


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `changes` merged in, nested dicts key by key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_config(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tiny run configuration as a plain dict (for `RunConfig.from_dict`), with `changes`."""
    return deep_merge(TINY_RUN, changes or {})


#: the encoder and decoder of the tiny models the unit tests build in memory
TINY_ENCODER: dict[str, Any] = {"channels": [4, 6], "kernel_sizes": [3, 3], "strides": [1, 2]}
TINY_DECODER: dict[str, Any] = {"init_size": 4, "channels": [6, 7, 5], "kernel_size": 3}


def tiny_model(
    preset: str,
    *,
    image_size: int,
    num_slots: int,
    slot_dim: int,
    decoder_kwargs: dict[str, Any] | None = None,
    **fields: Any,
) -> torch.nn.Module:
    """A tiny slot autoencoder of `preset` (2 EM iterations, `TINY_ENCODER`, `decoder_kwargs`
    or `TINY_DECODER`, any other `ModelConfig` fields), built with torch's seed 0."""
    from probslot.models import ModelConfig, build_model

    cfg = ModelConfig(
        preset=preset,
        image_size=image_size,
        num_slots=num_slots,
        slot_dim=slot_dim,
        iters=2,
        encoder_kwargs=dict(TINY_ENCODER),
        decoder_kwargs=dict(decoder_kwargs or TINY_DECODER),
        **fields,
    )
    torch.manual_seed(0)
    return build_model(cfg)
