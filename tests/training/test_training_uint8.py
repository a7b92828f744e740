"""Training on a converted store with uint8 transfer: the loaders ship uint8 images and masks,
the DataModule's ``on_after_batch_transfer`` restores float32 / int64, and the run is the run
of float loading, step for step (losses, weights, validation figures, panels), also resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml

from format_fixtures import write_deepmind
from probslot.config import load_config
from probslot.data import convert
from probslot.io import RunPaths
from probslot.training import LastCheckpoint, SlotLightningModule, load_checkpoint, train
from probslot.training import run as run_module
from probslot.training.data import TrainingDataModule
from tiny_runs import tiny_config

FAST = ["trainer.progress=none", "trainer.deterministic=true", "trainer.checkpoint_every=1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("uint8_training")
    path, _ = write_deepmind(tmp / "src", "objects-room", 17, seed=6)
    convert(path, "objects-room", tmp / "store", progress=False)
    return tmp / "store"


def _yaml(store: Path, tmp_path: Path) -> Path:
    data = tiny_config(
        {
            # 12 train images in batches of 5 (an incomplete last batch), 3 val, 2 test
            "data": {
                "name": "objects-room",
                "root": str(store),
                "num_train": 12,
                "num_val": 3,
                "num_test": 2,
                "max_objects": 4,  # the default: a store is not filtered by it
                "batch_size": 5,
            },
            "trainer": {"max_steps": 4, "output_dir": str(tmp_path / "runs")},
        }
    )
    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class _Seen(pl.Callback):
    """The losses, and the dtype and range of every image batch the model and its EMA copy get."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}
        self.inputs: list[tuple[str, torch.dtype, float, float]] = []
        self.loader_dtypes: set[torch.dtype] = set()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        def record(name: str):
            def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
                images = args[0] if args else kwargs["images"]
                self.inputs.append((name, images.dtype, float(images.min()), float(images.max())))

            return hook

        pl_module.model.register_forward_pre_hook(record("train"), with_kwargs=True)
        pl_module.eval_model.register_forward_pre_hook(record("eval"), with_kwargs=True)
        for split in ("train", "val"):
            self.loader_dtypes.add(trainer.datamodule.build_split(split)[0]["image"].dtype)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, *a) -> None:
        self.losses[trainer.global_step - 1] = float(outputs["loss"])


class _FloatDataModule(TrainingDataModule):
    """The training DataModule as before uint8 transfer: float32 images out of the loaders."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg, uint8_transfer=False)


def _run(yaml_path: Path, name: str, *overrides: str, callbacks=(), resume: bool = False):
    cfg = load_config(yaml_path, [*FAST, f"trainer.run_name={name}", *overrides])
    return train(cfg, resume=resume, extra_callbacks=list(callbacks))


def test_uint8_transfer_trains_exactly_as_float_loading(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _yaml(store, tmp_path)
    fast_seen = _Seen()
    fast = _run(path, "uint8", callbacks=[fast_seen])
    monkeypatch.setattr(run_module, "TrainingDataModule", _FloatDataModule)
    float_seen = _Seen()
    slow = _run(path, "float", callbacks=[float_seen])

    assert fast_seen.loader_dtypes == {torch.uint8} and float_seen.loader_dtypes == {torch.float32}
    # the model gets float32 images in [0, 1] in training and validation, the same as before
    assert {name for name, *_ in fast_seen.inputs} == {"train", "eval"}
    assert all(
        dtype == torch.float32 and lo >= 0 and hi <= 1 for _, dtype, lo, hi in fast_seen.inputs
    )
    assert fast_seen.inputs == float_seen.inputs
    assert sorted(fast_seen.losses) == [0, 1, 2, 3] and fast_seen.losses == float_seen.losses
    for key in ("nll", "mse", "fg_ari", "fg_ari_attn"):
        assert fast[key] == slow[key], key
    a, b = (load_checkpoint(RunPaths(r.run_dir).last_ckpt) for r in (fast, slow))
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    # the panels (a validation batch read by PanelCallback itself) are the same pictures
    panels = sorted(RunPaths(fast.run_dir).panels.glob("*.png"))
    assert [p.name for p in panels] == ["step_0000002.png", "step_0000004.png"]
    for panel in panels:
        assert panel.read_bytes() == (RunPaths(slow.run_dir).panels / panel.name).read_bytes()


class _SigtermAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint)).sigterm = True


@pytest.mark.slow
def test_a_stopped_store_run_resumes_exactly(store: Path, tmp_path: Path) -> None:
    path = _yaml(store, tmp_path)
    ref_seen = _Seen()
    ref = _run(path, "ref", "trainer.max_steps=5", callbacks=[ref_seen])
    first = _run(path, "cut", "trainer.max_steps=5", callbacks=[_SigtermAt(2)])
    assert first.status == "interrupted"
    seen = _Seen()
    second = _run(path, "cut", "trainer.max_steps=5", callbacks=[seen], resume=True)
    assert sorted(seen.losses) == [3, 4]
    assert seen.losses == {s: ref_seen.losses[s] for s in (3, 4)}
    assert second["fg_ari"] == ref["fg_ari"] and second["nll"] == ref["nll"]


def test_uint8_batches_fed_past_the_datamodule_are_refused() -> None:
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"images must be float .* got torch\.uint8.*to_contract"):
        SlotLightningModule._images({"image": images})
