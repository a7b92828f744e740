"""`probslot evaluate`: eval.json contents against oracles, panels, and clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from probslot.evaluation import EvalConfig, EvalResult, evaluate_run, match_objects_to_slots
from probslot.evaluation.evaluate import load_split, min_images_for_identifiability

FAST = dict(progress=False, contrast_images=2, num_panels=3, posterior_samples=10)


def test_eval_json_has_every_metric_in_range(psa_run: Path, evaluated: EvalResult) -> None:
    on_disk = json.loads((psa_run / "eval.json").read_text())
    assert on_disk["num_images"] == evaluated.num_images == 23
    assert set(on_disk["segmentation"]) == {"decoder", "attention"}  # both sources, labelled
    for vals in on_disk["segmentation"].values():
        assert -1.0 <= vals["ari"] <= 1.0 and -1.0 <= vals["fg_ari"] <= 1.0
        assert 0.0 <= vals["mbo"] <= 1.0
    rec = on_disk["reconstruction"]
    assert rec["mse"] > 0 and rec["fg_mse"] > 0
    ident = on_disk["identifiability_gt"]
    assert -1.0 <= ident["smcc"] <= 1.0
    assert set(ident["per_latent_corr"]) == {"x", "y", "scale", "rotation", "hue", "shape"}
    assert ident["num_objects"] >= 23  # >= 1 visible object per image
    assert on_disk["compositional_contrast"]["mean"] >= 0
    assert on_disk["compositional_contrast"]["num_images"] == 2
    counts = on_disk["slot_counts"]["thresholds"]["tau=0.05"]
    assert 1.0 <= counts["mean_active"] <= 3.0  # Eq. 7 (`relevant`): every image keeps a slot
    assert on_disk["grouping"] == "psa"
    gen = on_disk["generation"]
    assert gen["rfid"] >= 0 and "cfid" in gen and "ckid" in gen
    assert on_disk["posterior"]["samples"] == 10
    for rel in on_disk["figures"].values():
        assert (psa_run / rel).is_file()
    assert {"reconstructions", "slots", "samples", "pi"} <= set(on_disk["figures"])


def test_segmentation_and_mse_equal_dense_oracles(psa_run: Path, evaluated: EvalResult) -> None:
    from probslot.config import load_config
    from probslot.io import load_model

    model = load_model(psa_run)
    ds = load_split(load_config(psa_run / "config.yaml"), "test")
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    labels = torch.stack([ds[i]["mask"] for i in range(len(ds))])
    torch.manual_seed(0)  # slot initialisation is random; evaluate seeds it with EvalConfig.seed
    with torch.no_grad():
        out = model(images)  # 23 images: one batch, as in evaluate (batch_size 32)
    for source, masks in (("decoder", out.masks[:, :, 0]), ("attention", out.attn_masks)):
        pred = masks.argmax(1)
        scores = []
        for p, t in zip(pred, labels, strict=True):
            fg = t > 0
            if fg.any():
                scores.append(adjusted_rand_score(t[fg].numpy(), p[fg].numpy()))
        assert evaluated.segmentation[source].fg_ari == pytest.approx(np.mean(scores), abs=1e-6)
        full = [
            adjusted_rand_score(t.flatten().numpy(), p.flatten().numpy())
            for p, t in zip(pred, labels, strict=True)
        ]
        assert evaluated.segmentation[source].ari == pytest.approx(np.mean(full), abs=1e-6)
    recon = out.recon.clamp(0, 1)
    mse = ((recon - images) ** 2).mean((1, 2, 3)).mean()
    assert evaluated.reconstruction.mse == pytest.approx(float(mse), rel=1e-5)


def test_match_objects_to_slots_recovers_a_permutation() -> None:
    # 2 images of 5x7 pixels, 2 objects, 3 slots whose masks are the objects in another order
    labels = torch.zeros(2, 5, 7, dtype=torch.long)
    labels[:, :2, :3] = 1
    labels[:, 3:, 4:] = 2
    onehot = torch.stack([(labels == j) for j in range(3)], 1).float()  # bg, obj1, obj2
    order = [torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0])]  # slot s shows label order[s]
    masks = torch.stack([onehot[i, order[i]] for i in range(2)])
    visibility = torch.tensor([[True, True], [True, False]])
    pairs = match_objects_to_slots(labels, masks, visibility)
    # image 0: object row 0 (label 1) is slot 2, row 1 (label 2) is slot 0; image 1: row 0 → slot 0
    assert sorted(pairs) == [(0, 0, 2), (0, 1, 0), (1, 0, 0)]


def test_min_images_for_identifiability() -> None:
    assert min_images_for_identifiability(5) == 9  # ceil(7 / 0.8) = 9 >= 7 + 2
    assert min_images_for_identifiability(64) == math.ceil(66 / 0.8)


def test_missing_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist. Pass a run directory"):
        evaluate_run(tmp_path / "nope", EvalConfig(progress=False))


def test_more_images_than_the_split_is_an_error(psa_run: Path) -> None:
    with pytest.raises(
        ValueError, match=r"max_images=24 asks for more images than the 'test' split holds \(23\)"
    ):
        evaluate_run(psa_run, EvalConfig(max_images=24, progress=False))


def test_fewer_images_than_identifiability_needs_skips_it_with_a_note(run_factory) -> None:
    """A small evaluation gives the metrics it can and says which it skipped."""
    run = run_factory("small_test", changes={"data": {"num_test": 3}})  # ≤ 6 objects
    result = evaluate_run(run, EvalConfig(progress=False, posterior_samples=0))
    assert result.identifiability is None
    assert "identifiability_gt" not in result.to_dict()  # absent from eval.json, not null
    assert result.segmentation and result.reconstruction.mse is not None
    (note,) = [n for n in result.notes if n.startswith("identifiability vs ground truth")]
    assert "needs at least 9 matched objects and 3 images gave" in note
    assert "--max_images, or the data override data.num_test=N" in note


def test_missing_inception_file_says_how_to_supply_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--inception PATH"):
        EvalConfig(inception=str(tmp_path / "inception.pt"))


def test_bad_options_are_errors() -> None:
    with pytest.raises(
        ValueError, match=r"split must be one of \['train', 'val', 'test'\]; got 'tset'"
    ):
        EvalConfig(split="tset")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1; got 0"):
        EvalConfig(batch_size=0)
    with pytest.raises(
        TypeError, match=r"contrast_images must be an integer >= 0; got 2.0 \(float\)"
    ):
        EvalConfig(contrast_images=2.0)
    with pytest.raises(TypeError, match=r"max_images must be an integer >= 1; got True \(bool\)"):
        EvalConfig(max_images=True)


def test_sa_run_skips_posterior_metrics_with_notes(run_factory) -> None:
    run = run_factory("sa_noa", changes={"model": {"preset": "SA-NoA"}})
    res = evaluate_run(run, EvalConfig(**FAST))
    assert res.grouping == "sa" and res.decoder_additive is False
    assert set(res.segmentation) == {"attention"}  # non-additive: no decoder alpha masks
    assert res.slot_counts is None and res.generation is None and res.posterior is None
    notes = " ".join(res.notes)
    assert "decoder alpha masks: not computed" in notes and "FID/KID: skipped" in notes


def test_cli_evaluate_writes_eval_json_and_reports_errors(run_factory, capsys) -> None:
    from probslot.cli import main

    run = run_factory("cli_eval", seed=3)
    assert main(["evaluate", "--run_dir", str(run), "--no_progress", "--contrast_images", "1"]) == 0
    out = capsys.readouterr().out
    assert f"metrics written to {run / 'eval.json'}" in out and (run / "eval.json").is_file()
    assert main(["evaluate", "--run_dir", str(run / "missing"), "--no_progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


class _DropKeys:
    """A dataset view without some item keys (a source without masks, or not an image dataset)."""

    def __init__(self, base, drop: tuple[str, ...]) -> None:
        self.base, self.drop = base, drop

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        return {k: v for k, v in self.base[i].items() if k not in self.drop}


def test_dataset_without_masks_skips_mask_metrics(run_factory, monkeypatch) -> None:
    import probslot.evaluation.evaluate as E

    run = run_factory("no_masks", seed=4)
    real = E.load_split
    monkeypatch.setattr(E, "load_split", lambda cfg, split: _DropKeys(real(cfg, split), ("mask",)))
    res = evaluate_run(run, EvalConfig(**FAST))
    assert res.segmentation == {} and res.reconstruction.fg_mse is None
    assert res.reconstruction.mse > 0 and res.identifiability is None
    assert any("no ground-truth masks" in n for n in res.notes)


def test_non_image_dataset_is_a_clear_error(run_factory, monkeypatch) -> None:
    import probslot.evaluation.evaluate as E

    run = run_factory("no_images", seed=5)
    real = E.load_split
    monkeypatch.setattr(E, "load_split", lambda cfg, split: _DropKeys(real(cfg, split), ("image",)))
    with pytest.raises(ValueError, match="needs an image dataset whose items hold 'image'"):
        evaluate_run(run, EvalConfig(**FAST))
