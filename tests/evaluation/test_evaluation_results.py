"""Typed results: `EvalResult` and `Comparison` are the files eval.json and compare.json, read back
exactly (older files too), and they are what ``probslot evaluate`` / ``compare`` print."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from probslot.evaluation import (
    Comparison,
    EvalResult,
    Generation,
    ObjectDiscovery,
    ObjectScores,
)

#: the sections of a pixel model's eval.json in file order (`evaluated` has all but ``draws``)
EVAL_KEYS = [
    "run", "split", "num_images", "num_slots", "slot_dim", "grouping", "decoder_additive",
    "notes", "segmentation", "reconstruction", "identifiability_gt", "compositional_contrast",
    "slot_counts", "posterior", "generation", "figures", "config",
]  # fmt: skip
IDENT_KEYS = [
    "num_objects", "matching", "mask_source", "smcc", "smcc_chance", "smcc_adjusted",
    "per_latent_corr", "r2_affine", "r2_krr", "sis", "sis_pairs",
]  # fmt: skip


# --------------------------------------------------------------------------- eval.json
def test_eval_json_on_disk_is_the_result_dict(psa_run: Path, evaluated: EvalResult) -> None:
    on_disk = json.loads((psa_run / "eval.json").read_text())
    d = evaluated.to_dict()
    assert on_disk == d  # JSON types only: lists, not tuples
    assert list(d) == EVAL_KEYS and list(d["identifiability_gt"]) == IDENT_KEYS
    assert list(d["segmentation"]) == ["decoder", "attention"]
    assert list(d["slot_counts"]["thresholds"]) == ["tau=0.01", "tau=0.05", "tau=0.1"]
    # the typed fields are the file's figures
    assert d["segmentation"]["decoder"]["fg_ari"] == evaluated.segmentation["decoder"].fg_ari
    assert d["identifiability_gt"]["smcc"] == evaluated.identifiability.smcc
    assert d["slot_counts"]["thresholds"]["tau=0.05"]["mean_active"] == (
        evaluated.slot_counts.thresholds[0.05].mean_active
    )
    assert d["config"]["posterior_samples"] == evaluated.config.posterior_samples == 10
    assert evaluated.target == "pixels" and evaluated.objects is None


def test_eval_result_round_trips(psa_run: Path, evaluated: EvalResult) -> None:
    assert EvalResult.from_dict(evaluated.to_dict()) == evaluated
    # the file reads back into an equal result (eval.json sorts its keys: order aside)
    assert EvalResult.load(psa_run / "eval.json") == evaluated
    assert EvalResult.load(psa_run) == evaluated  # the run directory holding it
    loaded = EvalResult.load(psa_run)
    assert loaded.config.data_overrides == () and loaded.slot_counts.pi_sorted_mean == (
        evaluated.slot_counts.pi_sorted_mean
    )


def test_generation_without_posterior_writes_no_sample_figures(evaluated: EvalResult) -> None:
    assert evaluated.posterior is not None and evaluated.generation.cfid is not None
    assert set(evaluated.to_dict()["generation"]) == {"rfid", "rkid", "cfid", "ckid"}
    gen = evaluated.generation
    bare = replace(evaluated, posterior=None, generation=Generation(gen.rfid, gen.rkid))
    d = bare.to_dict()
    assert d["generation"] == {"rfid": gen.rfid, "rkid": gen.rkid} and "posterior" not in d
    assert EvalResult.from_dict(d) == bare


def test_older_eval_json_without_newer_keys_loads(tmp_path: Path, evaluated: EvalResult) -> None:
    d = evaluated.to_dict()
    for key in ("compositional_contrast", "slot_counts", "posterior", "generation", "figures"):
        del d[key]
    del d["identifiability_gt"]["sis"], d["identifiability_gt"]["sis_pairs"]
    for key in ("draw", "draws", "data_overrides"):  # options added later
        del d["config"][key]
    d["config"]["retired_option"] = 3  # an option since removed
    d["config"]["inception"] = str(tmp_path / "elsewhere" / "inception.pt")  # not on this machine
    (tmp_path / "eval.json").write_text(json.dumps(d))
    old = EvalResult.load(tmp_path)
    assert old.identifiability.sis is None and old.identifiability.sis_pairs is None
    assert old.identifiability.smcc == evaluated.identifiability.smcc
    assert old.slot_counts is None and old.generation is None and old.figures == {}
    assert old.config.draws == 1 and old.config.data_overrides == ()  # the defaults
    assert old.config.inception == d["config"]["inception"]  # a record, kept as saved
    assert old.summary_lines() == evaluated.summary_lines()
    # a file with only the figures every evaluation has
    minimal = EvalResult.from_dict({"run": "r", "split": "test", "num_images": 5})
    assert minimal.segmentation == {} and minimal.reconstruction is None and minimal.config is None


def test_not_an_eval_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"layout of eval.json: the keys \['run', 'num_images'\]"):
        EvalResult.from_dict({"split": "test", "smcc": 0.5})
    with pytest.raises(FileNotFoundError, match="no eval.json at .*probslot evaluate --run_dir"):
        EvalResult.load(tmp_path)


def test_feature_model_result_keeps_the_object_discovery_layout() -> None:
    scores = ObjectScores(mbo_i=0.5, mbo_c=0.25, fg_ari=0.125, corloc=1.0)
    found = ObjectDiscovery(
        segmentation={"decoder": scores, "attention": replace(scores, corloc=0.0)},
        feature_mse=1.5,
        scored_images={"mbo_i": 3, "mbo_c": 3, "fg_ari": 2, "corloc": 3},
    )
    result = EvalResult("runs/voc", "val", 3, ("feature model: ...",), objects=found)
    d = result.to_dict()
    assert list(d) == [
        "run", "split", "target", "segmentation", "reconstruction", "images", "scored_images",
        "notes",
    ]  # fmt: skip
    assert d["target"] == "features" and d["images"] == 3
    assert d["segmentation"]["decoder"] == {
        "mbo_i": 0.5,
        "mbo_c": 0.25,
        "fg_ari": 0.125,
        "corloc": 1.0,
    }
    assert d["reconstruction"] == {"feature_mse": 1.5}
    assert result.target == "features" and EvalResult.from_dict(d) == result
    assert result.summary_lines() == [
        "decoder masks: mbo_i=0.5000, mbo_c=0.2500, fg_ari=0.1250, corloc=1.0000",
        "attention masks: mbo_i=0.5000, mbo_c=0.2500, fg_ari=0.1250, corloc=0.0000",
        "feature_mse=1.50000",
    ]
    # without class maps mBO_c is not computed: absent from the file, None when read back
    no_classes = ObjectDiscovery(
        {"decoder": replace(scores, mbo_c=None)}, 1.5, {"mbo_i": 3, "fg_ari": 2, "corloc": 3}
    )
    d2 = replace(result, objects=no_classes).to_dict()
    assert d2["segmentation"]["decoder"] == {"mbo_i": 0.5, "fg_ari": 0.125, "corloc": 1.0}
    assert EvalResult.from_dict(d2).objects == no_classes


def test_summary_lines_show_the_result_fields(evaluated: EvalResult) -> None:
    dec, att = evaluated.segmentation["decoder"], evaluated.segmentation["attention"]
    rec, ident = evaluated.reconstruction, evaluated.identifiability
    assert evaluated.summary_lines() == [
        f"decoder masks: ari={dec.ari:.4f}, fg_ari={dec.fg_ari:.4f}, mbo={dec.mbo:.4f}",
        f"attention masks: ari={att.ari:.4f}, fg_ari={att.fg_ari:.4f}, mbo={att.mbo:.4f}",
        f"mse={rec.mse:.5f}, fg_mse={rec.fg_mse:.5f}",
        f"vs ground-truth latents: smcc={ident.smcc:.4f}, r2_affine={ident.r2_affine:.4f}",
    ]


def test_cli_evaluate_prints_the_result(evaluated: EvalResult, monkeypatch, capsys) -> None:
    import probslot.evaluation.evaluate as E
    from probslot.evaluation.commands import evaluate

    monkeypatch.setattr(E, "evaluate_run", lambda run_dir, cfg: evaluated)
    out = evaluate("runs/x", progress=False)
    assert out == Path("runs/x/eval.json")
    assert capsys.readouterr().out.splitlines() == [
        *evaluated.summary_lines(),
        *(f"note: {n}" for n in evaluated.notes),
        "metrics written to runs/x/eval.json",
        "panels written to  runs/x/eval/",
    ]


# --------------------------------------------------------------------------- compare.json
def test_compare_json_on_disk_is_the_comparison_dict(compared) -> None:
    res, out = compared
    d = res.to_dict()
    assert json.loads((out / "compare.json").read_text()) == d
    assert list(d) == [
        "runs", "names", "split", "num_images", "num_slots", "slot_dim", "pairs", "matrices",
        "directed", "summary", "consecutive", "notes", "warnings", "figure", "config",
    ]  # fmt: skip
    assert list(d["summary"]) == [
        "smcc", "r2", "r2_krr", "posterior_kl", "posterior_bhattacharyya", "posterior_mean_error",
    ]  # fmt: skip
    assert d["summary"]["smcc"] == {
        "mean": res.summary["smcc"].mean,
        "std": res.summary["smcc"].std,
        "n": 3,
    }
    assert res.has_posterior and (out / res.figure).is_file()
    assert Comparison.from_dict(d) == res and Comparison.load(out) == res


def test_older_compare_json_without_warnings_or_config_loads(compared, tmp_path: Path) -> None:
    res, _ = compared
    d = res.to_dict()
    del d["warnings"], d["config"], d["consecutive"]
    old = Comparison.from_dict(d)
    assert old.warnings == () and old.config is None and old.consecutive == {}
    assert old.summary["smcc"] == res.summary["smcc"]
    assert old.matrices == res.matrices
    with pytest.raises(ValueError, match=r"layout of compare.json: the keys \['matrices'\]"):
        Comparison.from_dict({k: v for k, v in d.items() if k != "matrices"})
    with pytest.raises(FileNotFoundError, match="no compare.json at .*probslot compare"):
        Comparison.load(tmp_path)


def test_cli_compare_prints_the_comparison(compared, monkeypatch, capsys) -> None:
    import probslot.evaluation.compare as C
    from probslot.evaluation.commands import compare

    res, _ = compared
    monkeypatch.setattr(C, "compare_runs", lambda run_dirs, out, cfg: res)
    compare(["a", "b", "c"], out="cmp", progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        *res.summary_lines(),
        "comparison written to cmp/compare.json and cmp/compare.png",
    ]
    s = res.summary["smcc"]
    assert lines[0] == f"smcc: {s.mean:.4f} ± {s.std:.4f} over 3 pairs"
