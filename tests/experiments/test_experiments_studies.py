"""Every study end to end at its tiny scale (a few steps per run, in this process): the files
it writes and the figures its summary names (``slow``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from format_fixtures import write_deepmind
from probslot.data import convert
from probslot.experiments import get_study, run_study

pytestmark = pytest.mark.slow


def _run(name: str, out: Path, *overrides: str, seeds: int | None = None) -> dict:
    res = run_study(name, out, "tiny", seeds, jobs=0, overrides=list(overrides), say=lambda _: None)
    assert res.output is not None and res.trained
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"] == name and summary["scale"] == "tiny"
    text = (out / "results.md").read_text()
    assert f"probslot experiment {name} --scale tiny" in text and "**Reading.**" in text
    for fig in res.output.figures:
        assert fig.is_file() and fig.stat().st_size > 1000
        assert f"]({fig.relative_to(out).as_posix()})" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["runs"]) == {p.name for p in (out / "runs").iterdir()}
    return summary


def test_sprites_study(tmp_path):
    summary = _run("sprites", tmp_path / "sprites")
    models = summary["models"]
    assert set(models) == {"AE", "PSA-Proj"}
    for stats in models.values():
        for key in ("smcc_gt", "r2_gt", "sis", "mse", "fg_ari", "compositional_contrast"):
            assert stats[key]["n"] == 2, key  # both seeds scored
        assert [p["runs"] for p in stats["smcc_cross"]["pairs"]] == [stats["runs"]]
    # 4-step models separate nothing: they must be reported as collapsed, not as results
    assert all(stats["collapsed"] for stats in models.values())
    assert "psa_proj_vs_sa" not in summary  # no SA at this scale


def test_injectivity_and_tradeoff_studies(tmp_path):
    inj = _run("injectivity", tmp_path / "injectivity")
    assert set(inj["variants"]) == {"LeakyReLU (reference)", "transformer decoder"}
    study = get_study("injectivity")  # every variant is built when the study is planned
    labels = {s.group for s in study.plan(study.scale("cpu"), 1)}
    assert labels == {
        "LeakyReLU (reference)", "ReLU", "non-additive decoder", "transformer decoder",
        "narrow bottleneck 16-4-16", "wide 32-32-32",
    }  # fmt: skip
    trade = _run("tradeoff", tmp_path / "tradeoff")
    assert len(trade["variants"]) == 3
    assert set(trade["pareto_front"]) <= set(trade["variants"]) and trade["pareto_front"]


def test_posterior_stability_study(tmp_path):
    summary = _run("posterior-stability", tmp_path / "stability")
    sprites, toy = summary["sprites"], summary["toy2d"]
    assert {"across seeds: reference", "across seeds: grey background", "across data sets",
            "floor: untrained model", "floor: inputs shuffled"} == set(sprites)  # fmt: skip
    assert len(sprites["across data sets"]["pairs"]) == 4  # 2 seeds × 2 seeds
    assert {"across seeds: toy2d", "floor: untrained model", "floor: inputs shuffled"} == set(toy)
    for stats in (*sprites.values(), *toy.values()):
        assert stats["mean_error"]["n"] == len(stats["pairs"])


def test_pruning_study(tmp_path):
    summary = _run("pruning", tmp_path / "pruning")
    rules = summary["rules"]
    assert {"PSA: ARD after EM", "PSA: ARD inside EM", "PSA + keep gate: ARD after EM",
            "PSA + keep gate: learned keep gate"} <= set(rules)  # fmt: skip
    sweep = rules["PSA: ARD after EM"]
    assert sweep["0.0"]["decoder_flops_saved"]["mean"] == pytest.approx(0.0, abs=1e-9)
    for per_tau in sweep.values():  # MAE and FLOPs saved are well-formed at every τ
        assert per_tau["mae_with_background"]["mean"] >= 0
        assert 0 <= per_tau["decoder_flops_saved"]["mean"] < 1


@pytest.mark.parametrize(
    ("study", "fmt", "scenes", "options"),
    [
        ("clevr6", "clevr-with-masks", 60, {"crop": "slot-attention", "image_size": 128}),
        ("objects-room", "objects-room", 30, {}),
    ],
)
def test_real_data_studies_on_fixture_stores(tmp_path, study, fmt, scenes, options):
    path, _ = write_deepmind(tmp_path / "src", fmt, scenes, seed=3)
    store = tmp_path / "store"
    convert(path, fmt, store, progress=False, **options)
    summary = _run(study, tmp_path / study, f"data.root={store}")
    assert set(summary["models"]) == ({"AE", "PSA-Proj"} if study == "clevr6" else {"PSA-Proj"})
    if study == "objects-room":  # no latents in the source: nothing scored against them
        assert summary["models"]["PSA-Proj"]["smcc_gt"]["n"] == 0
    text = (tmp_path / study / "results.md").read_text()
    assert "the paper's figures beside ours" in text
