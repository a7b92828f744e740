"""Checkpoints are read safely: a pickle that would run code is refused, damaged files are named.

Every case writes a file, reads it with `load_checkpoint` (or the Lightning plug-in) and checks
the one-line message; the code-executing pickle also checks that its payload never ran.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from probslot.training import AtomicCheckpointIO, CheckpointError, load_checkpoint
from probslot.training.checkpoint import (
    CHECKPOINT_VERSION,
    get_rng_state,
    probslot_section,
    set_rng_state,
    verify_checkpoint_file,
)


class _RunsCode:
    """Unpickling this calls ``os.system`` (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _ours(step: int = 3) -> dict[str, object]:
    return {
        "global_step": step,
        "state_dict": {"model.w": torch.arange(7.0)},
        "probslot": probslot_section(batches_seen=step),
    }


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_round_trip_of_our_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_ours(5), path)
    loaded = load_checkpoint(path)
    assert loaded["global_step"] == 5
    assert loaded["probslot"]["version"] == CHECKPOINT_VERSION
    torch.testing.assert_close(loaded["state_dict"]["model.w"], torch.arange(7.0))


def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = _save({**_ours(), "payload": _RunsCode(marker)}, tmp_path / "evil.ckpt")
    # the file is a valid torch.save archive: only the restricted unpickler stops it
    assert verify_checkpoint_file(path) == path
    with pytest.raises(CheckpointError, match=r"not tensors or plain data.*would run code"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"would run code"):
        AtomicCheckpointIO().load_checkpoint(path)  # Lightning's resume path
    assert not marker.exists()
    # the control: an unrestricted load does run it (so the test can fail)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_bare_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"payload": _RunsCode(marker)}))
    with pytest.raises(CheckpointError, match=r"bare pickle.*does not unpickle"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_ours(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"'.*last.ckpt' \(\d+ bytes\) is truncated"):
        load_checkpoint(path)


def test_corrupted_byte_fails_the_crc(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    ckpt = _ours()
    ckpt["state_dict"] = {"model.w": torch.arange(4096.0)}  # a large stored member to hit
    AtomicCheckpointIO().save_checkpoint(ckpt, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"is corrupt: member '.*' fails its CRC-32 check"):
        load_checkpoint(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        load_checkpoint(tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError, match=r"'.*nope.ckpt' does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    (tmp_path / "text.ckpt").write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match=r"not a torch.save archive"):
        load_checkpoint(tmp_path / "text.ckpt")


def test_checkpoint_that_is_not_ours(tmp_path: Path) -> None:
    lightning_only = {"global_step": 3, "state_dict": {}, "pytorch-lightning_version": "2.6"}
    path = _save(lightning_only, tmp_path / "other.ckpt")
    with pytest.raises(
        CheckpointError, match=r"not written by probslot \(no 'probslot' section; keys: global_step"
    ):
        load_checkpoint(path)
    assert load_checkpoint(path, require_probslot=False)["global_step"] == 3
    with pytest.raises(CheckpointError, match=r"holds a list, not a checkpoint dict"):
        load_checkpoint(_save([1, 2, 3], tmp_path / "list.ckpt"))


def test_newer_format_asks_for_an_upgrade(tmp_path: Path) -> None:
    ckpt = _ours()
    ckpt["probslot"] = {**ckpt["probslot"], "version": CHECKPOINT_VERSION + 1}
    path = _save(ckpt, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match=r"format version 2, newer than .*upgrade probslot"):
        load_checkpoint(path)


def test_incomplete_checkpoint_lacks_state_dict(tmp_path: Path) -> None:
    ckpt = _ours()
    del ckpt["state_dict"]
    with pytest.raises(CheckpointError, match=r"lacks 'state_dict', so it is incomplete"):
        load_checkpoint(_save(ckpt, tmp_path / "half.ckpt"))


def test_rng_states_round_trip_through_a_safe_load(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(5)
    random.seed(7)
    state = get_rng_state()
    want = (torch.rand(4), np.random.rand(3), random.random())
    path = _save({**_ours(), "probslot": probslot_section(rng=[state])}, tmp_path / "r.ckpt")
    torch.manual_seed(11)
    np.random.seed(13)
    random.seed(17)
    set_rng_state(load_checkpoint(path)["probslot"]["rng"][0])
    got = (torch.rand(4), np.random.rand(3), random.random())
    assert torch.equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] == want[2]


def test_checkpoint_of_probslot_0_1_0_is_accepted_as_legacy(tmp_path: Path) -> None:
    """0.1.0 wrote plain Lightning checkpoints of the SlotLightningModule (no probslot section)."""
    old = {
        "global_step": 4,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {
            "model.w": torch.ones(2),
            "skipped_updates": torch.zeros((), dtype=torch.long),
        },
    }
    loaded = load_checkpoint(_save(old, tmp_path / "last.ckpt"))
    assert loaded["probslot"]["legacy"] is True and loaded["probslot"]["version"] == 0
    del old["state_dict"]["skipped_updates"]  # then it is someone else's Lightning checkpoint
    with pytest.raises(CheckpointError, match="not written by probslot"):
        load_checkpoint(_save(old, tmp_path / "other.ckpt"))
