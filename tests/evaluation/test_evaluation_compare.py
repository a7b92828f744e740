"""`probslot compare`: all-pairs SMCC/R² matrices, posterior agreement, config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from probslot.evaluation import CompareConfig, compare_runs, config_differences
from probslot.evaluation.compare import posterior_agreement

FAST = CompareConfig(progress=False, posterior_samples=200)


@pytest.fixture(scope="module")
def three_runs(run_factory) -> list[Path]:
    a = run_factory("cmp_s0", seed=0)
    b = run_factory("cmp_s1", seed=1)
    # same weights as run a under another seed/name: its slots equal run a's exactly
    c = run_factory("cmp_s2", seed=2, weights_from=a)
    return [a, b, c]


@pytest.fixture(scope="module")
def compared(three_runs: list[Path], tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("compare")
    return compare_runs(three_runs, out, FAST), out


def test_matrices_are_symmetric_with_unit_diagonal(compared) -> None:
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
    smcc = res["matrices"]["smcc"]
    pairs = [smcc[0][1], smcc[0][2], smcc[1][2]]
    summary = res["summary"]["smcc"]
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(sum(pairs) / 3)
    assert summary["std"] == pytest.approx(float(torch.tensor(pairs).std()))
    assert res["consecutive"]["smcc"]["n"] == 2  # the authors' protocol, for reference
    assert res["directed"]["smcc"][0][1] is not None


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
