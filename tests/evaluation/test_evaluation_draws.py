"""Deterministic evaluation: the figures come from a fixed draw of PSA's initial slots, and
``draws`` reports their spread over several fixed draws."""

from __future__ import annotations

import json

import pytest
import torch

from probslot.evaluation import EvalConfig, EvalResult, evaluate_run

FAST = dict(progress=False, contrast_images=0, num_panels=2, posterior_samples=0)


def test_evaluation_does_not_depend_on_the_global_random_state(run_factory) -> None:
    run = run_factory("draws_det", seed=3)
    torch.manual_seed(1)
    a = evaluate_run(run, EvalConfig(**FAST))
    torch.manual_seed(2)
    b = evaluate_run(run, EvalConfig(**FAST))
    assert a.segmentation == b.segmentation and a.reconstruction == b.reconstruction
    c = evaluate_run(run, EvalConfig(**FAST, draw=1))
    assert c.segmentation != a.segmentation  # another draw is another set of slots


def test_draws_report_mean_and_std_over_fixed_draws(run_factory) -> None:
    run = run_factory("draws_spread", seed=4)
    many = evaluate_run(run, EvalConfig(**FAST, draws=3))
    spread = many.draws
    assert spread.draws == (0, 1, 2)
    on_disk = json.loads((run / "eval.json").read_text())
    assert on_disk["draws"] == many.to_dict()["draws"] and on_disk["draws"]["draws"] == [0, 1, 2]
    assert EvalResult.from_dict(on_disk) == many  # the spread reads back typed
    singles = [evaluate_run(run, EvalConfig(**FAST, draw=d)) for d in range(3)]
    assert all(r.draws is None for r in singles)
    for source in many.segmentation:
        values = [r.segmentation[source].fg_ari for r in singles]
        entry = spread.stats[f"fg_ari_{source}"]
        assert entry.values == pytest.approx(values, abs=1e-12)
        t = torch.tensor(values, dtype=torch.float64)
        assert entry.mean == pytest.approx(float(t.mean()))
        assert entry.std == pytest.approx(float(t.std()))
    mses = [r.reconstruction.mse for r in singles]
    assert spread.stats["mse"].values == pytest.approx(mses, rel=1e-6)
    assert "smcc" in spread.stats and len(spread.stats["smcc"].values) == 3
    # the main figures are those of the first draw
    assert many.segmentation == singles[0].segmentation


def test_bad_draw_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"draws must be an integer >= 1; got 0"):
        EvalConfig(draws=0)
    with pytest.raises(TypeError, match=r"draw must be an integer >= 0; got 0.5"):
        EvalConfig(draw=0.5)
