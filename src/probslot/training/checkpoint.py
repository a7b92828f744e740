"""Checkpoints: written atomically, read without unpickling code, verified before use.

A probslot checkpoint is a Lightning checkpoint (``torch.save`` of a dict of tensors, numbers,
strings, lists and dicts) with one extra section, ``checkpoint["probslot"]``
(:func:`probslot_section`): the format name and version, the probslot version, the run's
``config.yaml`` text, the training position (images seen, batches seen), the numerical-guard
counters and every process's random-number-generator states.

* **Writing** (:class:`AtomicCheckpointIO`, the Lightning ``CheckpointIO`` plug-in of every run):
  ``torch.save`` into a temporary file in the target's directory, ``fsync``, ``os.replace`` over
  the target (:mod:`probslot.atomic`). A ``SIGKILL`` at any moment leaves either the previous
  complete checkpoint or the new one, never a part.
* **Reading** (:func:`load_checkpoint`; the plug-in's ``load_checkpoint``, so Lightning's own
  resume path ``Trainer.fit(ckpt_path=...)`` goes through it too): first the file is verified as
  a complete zip archive (every member's CRC-32, :func:`verify_checkpoint_file`), then read with
  ``torch.load(weights_only=True)``, PyTorch's restricted unpickler, which rebuilds only tensors
  and plain containers and refuses any other global (a pickle that would call ``os.system`` on
  load is refused before anything runs), with the allow-list :data:`SAFE_GLOBALS`; last, the
  probslot section is checked (format, version). Every failure is a :class:`CheckpointError`
  (a ``ValueError``) whose one-line message names the file, what was expected and the fix.
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from probslot.atomic import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "SAFE_GLOBALS",
    "AtomicCheckpointIO",
    "CheckpointError",
    "get_rng_state",
    "is_legacy_checkpoint",
    "load_checkpoint",
    "probslot_section",
    "set_rng_state",
    "verify_checkpoint_file",
]

#: ``checkpoint["probslot"]["format"]`` of every checkpoint probslot writes.
CHECKPOINT_FORMAT = "probslot-checkpoint"
#: Version of the probslot section; a newer one is refused with "upgrade probslot".
CHECKPOINT_VERSION = 1

#: Globals our checkpoints may contain beyond what ``torch.load(weights_only=True)`` allows
#: already (tensors, dtypes, devices, ``OrderedDict``, numbers, strings, containers). None today:
#: RNG states are stored as tensors and ints (:func:`get_rng_state`) and Lightning's sections
#: hold only tensors and primitives. A class added here must be a plain data holder.
SAFE_GLOBALS: list[Any] = []


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, corrupt, unsafe or not probslot's."""


# --------------------------------------------------------------------------- random states
def get_rng_state() -> dict[str, Any]:
    """This process's random states (torch CPU, every CUDA device, NumPy, Python) as tensors and
    plain values, so that ``torch.load(weights_only=True)`` can read them back."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned (in the same process layout)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- reading
def verify_checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """Check that `path` is a complete ``torch.save`` archive: a zip whose every member's CRC-32
    matches (a truncated or partly overwritten file fails here, before anything is unpickled).

    Raises:
        CheckpointError: the file is missing, empty, truncated, corrupt or not a zip archive.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    size = path.stat().st_size
    fix = (
        "it was not written completely (probslot writes checkpoints atomically, so it was "
        "copied or edited outside probslot); use best.ckpt or start the run again"
    )
    if size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes); {fix}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        with open(path, "rb") as fh:
            head = fh.read(2)
        what = (
            "a bare pickle (torch.save's legacy format or pickle.dump), which probslot never "
            "writes and does not unpickle"
            if head[:1] == b"\x80"
            else "not a torch.save archive"
        )
        raise CheckpointError(
            f"checkpoint {str(path)!r} ({size} bytes) is truncated or {what}; "
            "pass a last.ckpt or best.ckpt written by `probslot train`"
        ) from None
    except Exception as err:  # zipfile raises many kinds on damaged bytes (found by fuzzing)
        raise CheckpointError(
            f"checkpoint {str(path)!r} is damaged ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:120]}); {fix}"
        ) from None
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: member {bad!r} fails its CRC-32 check; {fix}"
        )
    return path


def _unsafe_message(path: Path, err: Exception) -> str:
    detail = " ".join(str(err).split("Check the documentation")[0].split())
    return (
        f"checkpoint {str(path)!r} holds objects that are not tensors or plain data, so it was "
        "not written by probslot and is refused: loading it would run code from the file "
        f"(torch.load(weights_only=True) stopped at: {detail[:200]})"
    )


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    require_probslot: bool = True,
) -> dict[str, Any]:
    """Read a checkpoint safely: verify the archive, unpickle only tensors and plain data
    (``torch.load(weights_only=True)`` with :data:`SAFE_GLOBALS`), check the probslot section.

    Args:
        path: a ``last.ckpt`` / ``best.ckpt`` of a run directory.
        map_location: where tensors go (``torch.load``'s argument).
        require_probslot: refuse a checkpoint without probslot's section (a plain Lightning or
            torch checkpoint); False accepts any safe checkpoint dict.

    Raises:
        CheckpointError: missing, truncated or corrupt file; a pickle that would execute code;
            not a dict; not written by probslot; a newer probslot format.
    """
    path = verify_checkpoint_file(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            # torch warns about damaged pickles' protocol numbers; they are refused below
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_unsafe_message(path, err)) from None
    except Exception as err:  # whatever else damaged bytes make torch.load raise
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({' '.join(str(err).split())[:200]}); "
            "pass a last.ckpt or best.ckpt written by `probslot train`"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a checkpoint dict; "
            "pass a last.ckpt or best.ckpt written by `probslot train`"
        )
    if require_probslot:
        check_probslot_section(checkpoint, path)
    return checkpoint


def is_legacy_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """A checkpoint of probslot 0.1.0, before the probslot section: a Lightning checkpoint of a
    `SlotLightningModule` (its ``skipped_updates`` buffer and ``model.`` weights)."""
    state = checkpoint.get("state_dict")
    return (
        "probslot" not in checkpoint
        and "pytorch-lightning_version" in checkpoint
        and isinstance(state, Mapping)
        and "skipped_updates" in state
        and any(str(k).startswith("model.") for k in state)
    )


def check_probslot_section(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse a checkpoint that probslot did not write, or a newer format than this version.

    A checkpoint of probslot 0.1.0 (:func:`is_legacy_checkpoint`) is accepted and given a
    version-0 section marked ``legacy`` (no data position or random states: its resume
    continues, but is not exact)."""
    if is_legacy_checkpoint(checkpoint):
        checkpoint["probslot"] = probslot_section(legacy=True)
        checkpoint["probslot"]["version"] = 0
        return
    section = checkpoint.get("probslot")
    if not isinstance(section, Mapping) or section.get("format") != CHECKPOINT_FORMAT:
        keys = ", ".join(sorted(str(k) for k in checkpoint)[:8])
        raise CheckpointError(
            f"checkpoint {str(path)!r} was not written by probslot (no 'probslot' section; keys: "
            f"{keys}); pass a last.ckpt or best.ckpt of a `probslot train` run directory"
        )
    version = section.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has probslot checkpoint format version {version!r}, newer "
            f"than this probslot reads ({CHECKPOINT_VERSION}; written by probslot "
            f"{section.get('probslot_version')}); upgrade probslot to resume it"
        )
    for key in ("state_dict", "global_step"):
        if key not in checkpoint:
            raise CheckpointError(
                f"checkpoint {str(path)!r} lacks {key!r}, so it is incomplete; use best.ckpt "
                "or start the run again"
            )


def probslot_section(**fields: Any) -> dict[str, Any]:
    """The ``checkpoint["probslot"]`` dict: format, version, probslot version and `fields`."""
    from probslot import __version__

    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "probslot_version": __version__,
        **fields,
    }


# --------------------------------------------------------------------------- the plug-in
class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic writes (temporary file, fsync, rename) and safe,
    verified reads (:func:`load_checkpoint`, also on Lightning's resume path)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_write(Path(path), lambda fh: torch.save(checkpoint, fh))

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # `weights_only` is ignored on purpose: probslot never unpickles arbitrary objects.
        return load_checkpoint(path, map_location="cpu" if map_location is None else map_location)
