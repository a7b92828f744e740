"""Which weights a posterior belongs to: the one fingerprint of a model's weights.

A posterior's ``model_hash`` is `model_fingerprint(model)`, whoever fitted it: the Python API
(`AggregatePosterior.fit`) records it and `probslot aggregate` goes through `fit`;
`probslot sample` and `probslot evaluate` compare it with the fingerprint of the run's model.
It depends on the weights alone: not on the device they sit on, nor on whether they came from
training, a checkpoint or ``model.safetensors`` (whose bytes also hold a header that can differ
between writers of the same weights).

`file_sha256` hashes a file's bytes. It is not a model hash: ``pruning.json`` records it as
``model_file_sha256``, and files written by `probslot aggregate` before the fingerprint had one
meaning hold it as their ``model_hash`` (`probslot.posterior.commands.check_run_posterior` still
accepts them).
"""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

__all__ = ["file_sha256", "model_fingerprint"]


def model_fingerprint(model: nn.Module) -> str:
    """sha256 hex digest of a model's weights: its ``state_dict`` hashed in sorted-name order.

    Each entry contributes its name, dtype, shape and raw bytes (of a contiguous CPU copy), so
    the digest is the same on any device and for a model reloaded from its safetensors file, and
    changes when any weight, buffer, dtype or shape does.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
