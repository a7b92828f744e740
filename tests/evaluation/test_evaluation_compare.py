"""`probslot compare`: all-pairs SMCC/R² matrices, posterior agreement, config checks."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from probslot.evaluation import (
    CompareConfig,
    Comparison,
    PairStats,
    compare_runs,
    config_differences,
)
from probslot.evaluation.compare import posterior_agreement

FAST = CompareConfig(progress=False, posterior_samples=200)


def test_matrices_are_symmetric_with_unit_diagonal(compared: tuple[Comparison, Path]) -> None:
    res, out = compared
    on_disk = json.loads((out / "compare.json").read_text())
    assert (out / "compare.png").is_file()
    assert on_disk["names"] == ["cmp_s0", "cmp_s1", "cmp_s2"]
    smcc = torch.tensor(on_disk["matrices"]["smcc"])
    r2 = torch.tensor(on_disk["matrices"]["r2"])
    assert smcc.shape == (3, 3)
    torch.testing.assert_close(smcc, smcc.T)
    torch.testing.assert_close(smcc.diagonal(), torch.ones(3, dtype=smcc.dtype), atol=1e-6, rtol=0)
    torch.testing.assert_close(r2.diagonal(), torch.ones(3, dtype=r2.dtype), atol=1e-6, rtol=0)
    # run 2 has run 0's weights: identical slots → SMCC 1, posterior agreement perfect
    assert smcc[0, 2] == pytest.approx(1.0, abs=1e-6)
    assert on_disk["matrices"]["posterior_mean_error"][0][2] == pytest.approx(0.0, abs=1e-8)
    assert on_disk["matrices"]["posterior_kl"][0][2] == pytest.approx(0.0, abs=1e-6)
    assert smcc[0, 1] < 0.999  # independent initialisations differ


def test_summary_is_over_all_pairs(compared) -> None:
    res, _ = compared
    smcc = res.matrices["smcc"]
    pairs = [smcc[0][1], smcc[0][2], smcc[1][2]]
    assert [v for _, _, v in res.pair_values("smcc")] == pairs
    assert [(a, b) for a, b, _ in res.pair_values("smcc")] == [
        ("cmp_s0", "cmp_s1"), ("cmp_s0", "cmp_s2"), ("cmp_s1", "cmp_s2")
    ]  # fmt: skip
    summary = res.summary["smcc"]
    assert summary.n == 3
    assert summary.mean == pytest.approx(sum(pairs) / 3)
    assert summary.std == pytest.approx(float(torch.tensor(pairs).std()))
    assert res.consecutive["smcc"].n == 2  # the authors' protocol, for reference
    assert res.directed["smcc"][0][1] is not None


def test_posterior_agreement_is_exact_under_affine_map_and_permutation() -> None:
    g = torch.Generator().manual_seed(0)
    m, k, d = 13, 3, 2
    mu = torch.randn(m, k, d, generator=g, dtype=torch.float64)
    var = torch.rand(m, k, d, generator=g, dtype=torch.float64) + 0.1
    pi = torch.softmax(torch.randn(m, k, generator=g, dtype=torch.float64), -1)
    perm = torch.stack([torch.randperm(k, generator=g) for _ in range(m)])  # perm[n, a] = slot of j
    scale, shift = (
        torch.tensor([2.0, -0.5], dtype=torch.float64),
        torch.tensor([1.0, 3.0], dtype=torch.float64),
    )
    inv = torch.argsort(perm, dim=1)  # slot s of run j holds run i's slot inv[n, s]
    mu_j = torch.gather(mu, 1, inv[..., None].expand(-1, -1, d)) * scale + shift
    var_j = torch.gather(var, 1, inv[..., None].expand(-1, -1, d)) * scale**2
    pi_j = torch.gather(pi, 1, inv)
    res = posterior_agreement(mu, var, pi, mu_j, var_j, pi_j, perm, samples=300)
    assert res["mean_error"] == pytest.approx(0.0, abs=1e-12)
    assert res["kl"] == pytest.approx(0.0, abs=1e-8)
    # a wrong permutation (identity) breaks the mean agreement
    wrong = posterior_agreement(
        mu, var, pi, mu_j, var_j, pi_j, torch.arange(k).expand(m, k), samples=300
    )
    assert wrong["mean_error"] > 0.1


def test_runs_of_different_configurations_are_rejected(run_factory, tmp_path: Path) -> None:
    a = run_factory("diff_a", seed=0)
    b = run_factory("diff_b", seed=1, changes={"model": {"num_slots": 4}, "optim": {"lr": 0.002}})
    with pytest.raises(
        ValueError, match=r"ONE configuration.*model\.num_slots: diff_a=3, diff_b=4.*optim\.lr"
    ):
        compare_runs([a, b], tmp_path / "out", FAST)
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_config_differences_ignores_seed_name_and_output(run_factory) -> None:
    from probslot.io import load_run_config

    a = load_run_config(run_factory("ign_a", seed=0))
    b = load_run_config(run_factory("ign_b", seed=5, changes={"data": {"seed": 7}}))
    assert config_differences([a, b]) == {}


def test_bad_inputs_are_clear_errors(three_runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2 runs .* got 1"):
        compare_runs(three_runs[:1], tmp_path, FAST)
    with pytest.raises(ValueError, match="each run may be given once"):
        compare_runs([three_runs[0], three_runs[0]], tmp_path, FAST)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compare_runs([three_runs[0], tmp_path / "missing"], tmp_path, FAST)
    with pytest.raises(
        ValueError, match=r"asks for more images than the 'test' split holds \(23\)"
    ):
        compare_runs(three_runs[:2], tmp_path, CompareConfig(max_images=30, progress=False))
    with pytest.raises(ValueError, match=r"needs at least 9 images; the 'test' split gives 4"):
        compare_runs(three_runs[:2], tmp_path, CompareConfig(max_images=4, progress=False))


def test_bad_options_are_errors() -> None:
    with pytest.raises(ValueError, match=r"split must be one of .*; got 'vla'. Did you mean 'val'"):
        CompareConfig(split="vla")
    with pytest.raises(ValueError, match="posterior_samples must be an integer >= 1; got 0"):
        CompareConfig(posterior_samples=0)
    with pytest.raises(TypeError, match=r"batch_size must be an integer >= 1; got '8' \(str\)"):
        CompareConfig(batch_size="8")
    with pytest.raises(ValueError, match="seed must be an integer >= 0; got -1"):
        CompareConfig(seed=-1)


# ---------------------------------------------------------------------- one pair, degenerate KL
def _posteriors(m: int = 40, k: int = 3, d: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(m, k, d, generator=g, dtype=torch.float64)
    var = torch.full((m, k, d), 0.5, dtype=torch.float64)
    pi = torch.softmax(torch.randn(m, k, generator=g, dtype=torch.float64), -1)
    return mu, var, pi, torch.arange(k).expand(m, k)


def _gaussian_oracle(m0, c0, m1, c1) -> float:
    """Bhattacharyya distance written out for diagonal covariances, one dimension at a time."""
    total = 0.0
    for a, va, b, vb in zip(m0.tolist(), c0.tolist(), m1.tolist(), c1.tolist(), strict=True):
        v = (va + vb) / 2
        total += (a - b) ** 2 / (8 * v) + 0.5 * math.log(v / math.sqrt(va * vb))
    return total


def test_bhattacharyya_matches_a_per_dimension_oracle() -> None:
    from probslot.evaluation.compare import _bhattacharyya

    g = torch.Generator().manual_seed(2)
    m0, m1 = (
        torch.randn(3, generator=g, dtype=torch.float64),
        torch.randn(3, generator=g, dtype=torch.float64),
    )
    v0, v1 = (
        torch.rand(3, generator=g, dtype=torch.float64) + 0.1,
        torch.rand(3, generator=g, dtype=torch.float64) + 0.1,
    )
    got = _bhattacharyya(m0, torch.diag(v0), m1, torch.diag(v1))
    assert got == pytest.approx(_gaussian_oracle(m0, v0, m1, v1), rel=1e-12)
    assert got == pytest.approx(_bhattacharyya(m1, torch.diag(v1), m0, torch.diag(v0)))  # symmetric


def test_robust_divergence_is_zero_up_to_the_map_and_graded() -> None:
    mu, var, pi, perm = _posteriors()
    same = posterior_agreement(mu, var, pi, 2 * mu + 1, 4 * var, pi, perm, samples=300)
    assert same["bhattacharyya"] == pytest.approx(0.0, abs=1e-9) and same["dims"] == 2
    assert same["kl"] == pytest.approx(0.0, abs=1e-8) and same["cond"] == pytest.approx(1.0)
    wider = posterior_agreement(mu, var, pi, mu, 2 * var, pi, perm, samples=300)
    much_wider = posterior_agreement(mu, var, pi, mu, 8 * var, pi, perm, samples=300)
    assert 0 < wider["bhattacharyya"] < much_wider["bhattacharyya"] < 1


def test_near_singular_map_makes_kl_degenerate_but_not_the_robust_figure() -> None:
    from probslot.evaluation.compare import KL_DEGENERATE, _degenerate_kl_warnings

    mu_j, var, pi, perm = _posteriors()
    # run i's slot means collapse along dimension 0 while its posterior variances do not: the
    # fitted map is ~diag(1e-6, 1), and the KL explodes (issue 18 saw 1.4e14 for two runs)
    mu_i = mu_j * torch.tensor([1e-6, 1.0], dtype=torch.float64)
    res = posterior_agreement(mu_i, var, pi, mu_j, var, pi, perm, samples=300)
    assert res["kl"] > 1e6 * KL_DEGENERATE
    assert res["cond"] == pytest.approx(1e6, rel=1e-3)
    # the flat direction is not resolved; along the other one the posteriors agree exactly
    assert res["dims"] == 1 and res["bhattacharyya"] == pytest.approx(0.0, abs=1e-9)
    # noise on the means (2 % of their spread) leaves the robust figure small and finite
    g = torch.Generator().manual_seed(4)
    noisy = mu_j + 0.02 * torch.randn(mu_j.shape, generator=g, dtype=torch.float64)
    res2 = posterior_agreement(mu_i, var, pi, noisy, var, pi, perm, samples=300)
    assert res2["bhattacharyya"] < 0.01
    kl = [[0.0, res["kl"]], [None, 0.0]]
    bhatt = [[0.0, res["bhattacharyya"]], [0.5, 0.0]]
    cond = [[1.0, res["cond"]], [1e17, 1.0]]
    lines = _degenerate_kl_warnings(kl, bhatt, cond, [[2, 1], [2, 2]], ["s0", "s1"])
    assert len(lines) == 2
    assert re.search(
        r"posterior_kl\(s0 ‖ s1\) is \d\.\d+e\+\d+ nats per dimension, degenerate \(> 10\)",
        lines[0],
    )
    assert "condition number 1e+06" in lines[0]
    assert "read posterior_bhattacharyya = " in lines[0] and "on the 1 directions" in lines[0]
    assert "infinite (singular map)" in lines[1]


def test_summary_lines_of_one_pair_have_no_spread(compared) -> None:
    from dataclasses import replace

    res, _ = compared
    one = replace(res, summary={"smcc": PairStats(0.8123, None, 1)}, warnings=("w",))
    assert one.summary_lines() == ["smcc: 0.8123 (one pair)", "warning: w"]
    three = replace(
        res,
        summary={"smcc": PairStats(0.8, 0.01, 3), "r2": PairStats(None, None, 0)},
        warnings=(),
    )
    assert three.summary_lines() == ["smcc: 0.8000 ± 0.0100 over 3 pairs"]
    huge = replace(res, summary={"posterior_kl": PairStats(1.4e14, None, 1)}, warnings=())
    assert huge.summary_lines() == ["posterior_kl: 1.4e+14 (one pair)"]


def test_compare_two_runs_reports_values_without_plus_minus(three_runs, tmp_path, capsys) -> None:
    from probslot.evaluation.commands import compare

    compare([str(r) for r in three_runs[:2]], out=str(tmp_path / "c"), progress=False)
    printed = capsys.readouterr().out
    assert "±" not in printed and "over 1 pairs" not in printed
    assert re.search(r"^smcc: -?\d\.\d{4} \(one pair\)$", printed, re.M)
    assert re.search(r"^posterior_mean_error: \d\.\d{4} \(one pair\)$", printed, re.M)
    res = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert res["summary"]["smcc"]["n"] == 1 and res["summary"]["smcc"]["std"] is None
    # every degenerate KL of the pair is named in a printed warning
    for w in res["warnings"]:
        assert f"warning: {w}" in printed


def test_robust_matrix_and_warnings_in_compare_json(compared) -> None:
    from probslot.evaluation.compare import KL_DEGENERATE

    res, _ = compared
    bh = res.matrices["posterior_bhattacharyya"]
    assert [bh[i][i] for i in range(3)] == pytest.approx([0.0] * 3, abs=1e-7)
    assert bh[0][2] == pytest.approx(0.0, abs=1e-7)  # run 2 has run 0's weights
    dims = res.directed["posterior_resolved_dims"]
    assert dims[0][2] == dims[2][0] > 0
    # untrained runs of different seeds: no direction where one's means predict the other's
    # (None, "no agreement"), or a finite, non-negative distance
    for i in range(3):
        for j in range(3):
            assert bh[i][j] == bh[j][i]
            assert (bh[i][j] is None and dims[i][j] == 0) or 0 <= bh[i][j] < math.inf
    kl = res.directed["posterior_kl"]
    degenerate = [
        (i, j)
        for i in range(3)
        for j in range(3)
        if i != j and (kl[i][j] is None or kl[i][j] > KL_DEGENERATE)
    ]
    assert len(res.warnings) == len(degenerate)
