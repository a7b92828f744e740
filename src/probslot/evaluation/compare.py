"""`probslot compare`: cross-seed identifiability of runs of ONE configuration.

All runs encode the **same images** (the chosen split of the first run's data config) with the
**same random slot initialisation** (``torch.manual_seed(seed)`` before each run), so slot set i
is (m, k, d) for every run and two runs with equal weights give equal slots. For every ordered pair (i, j), run i is the target and run j
the predictor:

* ``smcc[i][j]`` = `probslot.metrics.smcc_details(slots_i, slots_j, transform="affine")` (paper
  Eq. 12: per-image Hungarian matching in the affinely mapped space, one least-squares affine
  map per slot index fitted on 80 % of the images, Pearson correlation on the held-out 20 %);
* ``r2[i][j]`` = `slot_r2_details(slots_i, slots_j, transform="affine", perm=<the SMCC
  matching>)`, plus the RBF kernel-ridge R² of the authors' code (``r2_krr``).

SMCC and R² are directional; the reported matrices are symmetrised, ``(x[i][j] + x[j][i]) / 2``
(the directed ones are kept as ``*_directed``), and the summary is mean ± std over **all**
unordered pairs i < j. The authors compared only consecutive runs (r vs r − 1); that figure is
reported too (``consecutive``).

**Aggregate-posterior agreement** (PSA runs, paper Cor. 3: q(z) is identifiable up to an affine
map and a slot permutation). For each ordered pair, one pooled affine map z_i ≈ z_j W + b is
fitted by least squares on the matched slot means μ of the train images (matching = the SMCC
permutation). On the held-out images, with q_i, q_j the aggregate posteriors
(1/M) Σ_m Σ_k π_mk N(μ_mk, σ²_mk) of each run:

* ``posterior_mean_error[i][j]`` = Σ w ‖μ_i,mk − (μ_j,mπ(k) W + b)‖² / Σ w ‖μ_i,mk − μ̄_i‖², the
  matched-component mean distance relative to the spread of the means (0 = identical up to the
  affine map and permutation, 1 = no better than the mean), with weights w = √(π_i,mk π_j,mπ(k))
  (also used in the fit of W, b): slots with π ≈ 0 are no components of q(z);
* ``posterior_kl[i][j]`` ≈ KL(q_i ‖ q̃_j) per dimension (nats), Monte Carlo over draws z ~ q_i,
  where q̃_j is q_j pushed through the affine map: log q̃_j(z) = log q_j((z − b) W⁻¹) − log|det W|.
  0 for a run against itself. Unbounded: directions that the slot means barely span make W
  nearly singular and the KL huge (issue 18 reports 1.4·10¹⁴ for two runs);
* ``posterior_bhattacharyya[i][j]``: the robust alternative, shown on the heatmap: the
  Bhattacharyya distance per dimension (nats, closed form) between the moment-matched Gaussians
  of q_i and q̃_j (each posterior's mean and full covariance), with q̃_j pushed through the same
  least-squares map fitted by a truncated SVD (directions of run j's means with less than
  `SPAN_TOL` = 10⁻³ of the largest singular value are dropped), on the r directions the map
  resolves: the principal directions of run i's held-out slot means that are not flat and along
  which the mapped means explain at least `MIN_R2` = 0.5 of their variance (r is
  ``directed["posterior_resolved_dims"]``).

Why this alternative. On real runs the mixture KL is swamped three times over. (1) PSA's slot
means leave some directions flat (the demo's 32-d means span 29); the least-squares map gives
nearly flat directions of run j's means huge coefficients (W's largest singular value 8·10⁴,
condition number 10¹¹, between the demo and a 5 %-perturbed copy of it), and where run i's means
are flat it is near-singular. (2) Single components are sharp (demo: median σ² 0.03, 10 % below
0.0013), so a small misalignment leaves no common mass: a bounded mixture divergence
(Jensen–Shannon) saturates at 1 bit for that same perturbed copy, and clipping or symmetrising the
KL leaves it as uninformative. (3) The KL grows linearly with a variance ratio, so one collapsed
direction dominates it. The choice answers each: the truncated map and the resolved directions
keep what the map can align; moments are not swayed by sharp components; the Bhattacharyya
distance is symmetric and grows only with the logarithm of a variance ratio. It is 0 for
posteriors equal up to the map (exactly, for a per-dimension affine map and a permutation),
finite for every map, deterministic and graded between pairs (the demo and its perturbed copy:
0.006 where the KL says 10¹¹). It compares moments, not whole densities (equal moments do not make
equal mixtures), on r of the d directions: read it with r and the mean error.

A mixture KL above `KL_DEGENERATE` nats per dimension (or an infinite one) is **degenerate**: q_i
puts essentially no mass where q̃_j has any, so its size measures how singular the fitted map is
and how sharp the components are, not how far apart the posteriors are. Each such ordered pair
gets a line in `Comparison.warnings` (``compare.json["warnings"]``, printed by ``probslot compare``,
shown in the report)
naming the pair, its KL, W's condition number and the pair's ``posterior_bhattacharyya``. The
summary over pairs of a single pair is its value (``std`` None): there is no spread to report.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from probslot import metrics as M
from probslot.evaluation.options import CompareConfig
from probslot.evaluation.results import Comparison, PairStats
from probslot.io import RunPaths, load_model, load_run_config

__all__ = [
    "COMPARE_FILE",
    "IGNORED_KEYS",
    "KL_DEGENERATE",
    "MIN_R2",
    "SPAN_TOL",
    "CompareConfig",
    "Comparison",
    "compare_runs",
    "config_differences",
    "posterior_agreement",
]

COMPARE_FILE = "compare.json"
#: a posterior KL (nats per dimension) above this is degenerate (see the module docstring)
KL_DEGENERATE = 10.0
#: config keys that may differ between runs of one configuration
IGNORED_KEYS = frozenset({"trainer.seed", "data.seed", "trainer.run_name", "trainer.output_dir"})


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):  # an empty mapping adds no keys
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_differences(configs: Sequence[Any]) -> dict[str, list[Any]]:
    """{dotted key: [value per run]} for every key (outside `IGNORED_KEYS`) that differs."""
    from probslot.config import config_to_dict

    flats = [_flatten(config_to_dict(c)) for c in configs]
    keys = sorted(set().union(*flats))
    return {
        key: [f.get(key, "<missing>") for f in flats]
        for key in keys
        if key not in IGNORED_KEYS
        and any(f.get(key, "<missing>") != flats[0].get(key, "<missing>") for f in flats)
    }


#: singular values below this fraction of the largest are flat: dropped from the robust map's
#: regressors, and target directions with less than its square of the largest spread
SPAN_TOL = 1e-3
#: a direction is resolved by the map when it explains at least this share of the slot means'
#: variance along it (held-out R²)
MIN_R2 = 0.5


def _truncated_map(x: Tensor, y: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted least squares y ≈ x W + b (x, y: (n, d)) by a truncated SVD: directions of x
    whose singular value is below `SPAN_TOL` of the largest are dropped, so noise along nearly
    flat directions gets no (arbitrarily large) coefficient."""
    w = weights.reshape(-1, 1) / weights.sum().clamp_min(1e-12)
    xc, yc = (w * x).sum(0), (w * y).sum(0)
    u, sv, vh = torch.linalg.svd((x - xc) * w.sqrt(), full_matrices=False)
    keep = sv >= SPAN_TOL * sv[0] if sv.numel() and sv[0] > 0 else sv < 0
    m = vh[keep].T @ torch.diag(1 / sv[keep]) @ u[:, keep].T @ ((y - yc) * w.sqrt())
    return m, yc - xc @ m


def _resolved_basis(target: Tensor, pred: Tensor, weights: Tensor) -> Tensor:
    """(d, r) orthonormal principal directions of the target means (n, d) that the map resolves:
    not flat (spread ≥ `SPAN_TOL`² of the largest), and the mapped means `pred` explain at least
    `MIN_R2` of the means' weighted variance along them."""
    w = (weights.reshape(-1, 1) / weights.sum().clamp_min(1e-12)).clamp_min(0)
    centred = target - w.T @ target
    _, sv, vh = torch.linalg.svd(centred * w.sqrt(), full_matrices=False)  # principal directions
    spread = sv.pow(2)  # weighted variance of the means along each direction
    resid = ((target - pred) @ vh.T).pow(2).mul(w).sum(0)
    flat = spread < SPAN_TOL**2 * spread.max() if spread.numel() else spread > 0
    keep = ~flat & (spread > 0) & (resid <= (1 - MIN_R2) * spread)
    return vh[keep].T


def _moments(mu: Tensor, var: Tensor, pi: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (d,) and covariance (d, d) of the mixture Σ w N(μ, diag σ²), w ∝ π (rows of (n, d))."""
    w = pi.reshape(-1) / pi.sum()
    mu, var = mu.reshape(w.numel(), -1), var.reshape(w.numel(), -1)
    mean = w @ mu
    centred = mu - mean
    return mean, (centred.T * w) @ centred + torch.diag(w @ var)


def _bhattacharyya(m0: Tensor, c0: Tensor, m1: Tensor, c1: Tensor) -> float:
    """Bhattacharyya distance between N(m0, c0) and N(m1, c1) in nats (closed form):
    ⅛ Δᵀ C̄⁻¹ Δ + ½ ln(det C̄ / √(det c0 det c1)), C̄ = (c0 + c1) / 2. Symmetric; a variance
    ratio ρ along one direction adds only ~¼ ln ρ (the KL adds ~ρ / 2)."""
    mean_cov = (c0 + c1) / 2
    chol = torch.linalg.cholesky(mean_cov)
    delta = (m1 - m0)[:, None]
    maha = float((delta * torch.cholesky_solve(delta, chol)).sum())
    logdet = 2 * chol.diagonal().log().sum()
    half = (torch.linalg.slogdet(c0)[1] + torch.linalg.slogdet(c1)[1]) / 2
    return maha / 8 + float(logdet - half) / 2


def posterior_agreement(
    mu_i: Tensor,
    var_i: Tensor,
    pi_i: Tensor,
    mu_j: Tensor,
    var_j: Tensor,
    pi_j: Tensor,
    perm: Tensor,
    seed: int = 0,
    samples: int = 2000,
) -> dict[str, float]:
    """Agreement of two runs' aggregate posteriors after one affine map and a slot permutation.

    Args:
        mu_i, var_i: (m, k, d) run i's slot posteriors (the target); pi_i: (m, k).
        mu_j, var_j, pi_j: the same for run j.
        perm: (m, k) matching, ``perm[n, a]`` = slot of run j matched to slot a of run i.

    Returns:
        ``mean_error`` (relative matched-mean squared error, held-out images), ``kl`` (nats per
        dimension, KL(q_i ‖ q_j pushed through the affine map), held-out images), ``bhattacharyya``
        (nats per dimension, the Bhattacharyya distance between the moment-matched Gaussians of
        the same two densities on the directions the map resolves, see the module docstring;
        None when it resolves none), ``dims`` (r, the directions the map resolves) and ``cond`` (the condition number
        of the affine map's matrix W).
    """
    from probslot.posterior import AggregatePosterior

    m, k, d = mu_i.shape
    # the SMCC's split rule: d + 2 matched train slots, i.e. ⌈(d + 2) / k⌉ train images
    train, held = M.train_eval_split(m, 0.8, seed, math.ceil((d + 2) / k), "posterior agreement")
    mj = M.permute_slots(mu_j, perm).double()  # (m, k, d) aligned to run i's slot order
    mi = mu_i.double()
    # weight each matched pair by sqrt(π_i π_j): a slot with π ≈ 0 is no component of q(z), and
    # its mean (often just the initialisation) must not steer the map
    pj = torch.gather(pi_j.double(), 1, perm)
    wts = (pi_i.double() * pj).clamp_min(0).sqrt()  # (m, k)
    sw = wts[train].reshape(-1, 1).sqrt()
    x = torch.cat(
        [mj[train].reshape(-1, d), torch.ones(train.numel() * k, 1, dtype=torch.float64)], 1
    )
    y = mi[train].reshape(-1, d)
    sol = torch.linalg.lstsq(x * sw, y * sw, driver="gelsd").solution  # (d + 1, d)
    w, b = sol[:d], sol[d]
    pred = mj[held] @ w + b
    target = mi[held]
    wh = wts[held][..., None]  # (m', k, 1)
    centre = (wh * target).sum((0, 1)) / wh.sum().clamp_min(1e-12)
    spread = (wh * (target - centre).pow(2)).sum()
    mean_error = float((wh * (target - pred).pow(2)).sum() / spread.clamp_min(1e-12))

    cond = float(torch.linalg.cond(w))
    q_i = AggregatePosterior(mu_i[held].double(), var_i[held].double(), pi_i[held].double())
    q_j = AggregatePosterior(mu_j[held].double(), var_j[held].double(), pi_j[held].double())
    gen = torch.Generator().manual_seed(seed)
    z = q_i.sample(samples, generator=gen)  # (s, d)
    sign, logdet = torch.linalg.slogdet(w)
    if sign == 0 or not torch.isfinite(logdet):
        kl = math.inf
    else:
        back = torch.linalg.solve(w.T, (z - b).T).T  # (z - b) W⁻¹
        kl = float((q_i.log_prob(z) - (q_j.log_prob(back) - logdet)).mean() / d)

    # The robust figure: the Bhattacharyya distance of the moment-matched Gaussians (mean and
    # covariance of each aggregate posterior) on the directions the map resolves. The map is fitted again by a
    # truncated SVD: the plain fit gives nearly flat directions of run j's means huge
    # coefficients (W's largest singular value 8e4 on two demo-like runs), which blow up q̃_j's
    # covariance; and it is judged only where it explains the means (held-out R² ≥ MIN_R2).
    # Moments are not swayed by how sharp single components are (a mixture divergence saturates
    # on them). Closed form: no Monte Carlo noise; 0 for posteriors equal up to the map.
    w_r, b_r = _truncated_map(mj[train].reshape(-1, d), y, wts[train].reshape(-1))
    pred_r = mj[held] @ w_r + b_r
    basis = _resolved_basis(target.reshape(-1, d), pred_r.reshape(-1, d), wts[held].reshape(-1))
    dims = int(basis.shape[1])
    bhattacharyya: float | None = None
    if dims > 0:
        mean_i, cov_i = _moments(mu_i[held].double(), var_i[held].double(), pi_i[held].double())
        mean_j, cov_j = _moments(mu_j[held].double(), var_j[held].double(), pi_j[held].double())
        a = w_r @ basis  # (d, r): z_j ↦ (z_j W + b) basis
        bhattacharyya = (
            _bhattacharyya(mean_i @ basis, basis.T @ cov_i @ basis, (mean_j @ w_r + b_r) @ basis,
                           a.T @ cov_j @ a)
            / dims
        )  # fmt: skip
    return {
        "mean_error": mean_error,
        "kl": kl,
        "bhattacharyya": bhattacharyya,
        "dims": dims,
        "cond": cond,
    }


def _mean_std(values: Sequence[float | None]) -> PairStats:
    """Mean ± std over the finite `values` (None and non-finite values are left out)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return PairStats(mean=None, std=None, n=0)
    t = torch.tensor(vals, dtype=torch.float64)
    return PairStats(
        mean=float(t.mean()),
        std=float(t.std()) if len(vals) > 1 else None,  # one pair: no spread to report
        n=len(vals),
    )


def _degenerate_kl_warnings(
    kl: list[list[float | None]],
    bhatt: list[list[float | None]],
    cond: list[list[float | None]],
    dims: list[list[int | None]],
    names: Sequence[str],
) -> list[str]:
    """One line per ordered pair whose KL is degenerate (> `KL_DEGENERATE` or infinite)."""
    lines = []
    for i, j in itertools.product(range(len(names)), repeat=2):
        if i == j or cond[i][j] is None:
            continue
        value = kl[i][j]
        if value is not None and value <= KL_DEGENERATE:
            continue
        shown = "infinite (singular map)" if value is None else f"{value:.3g} nats per dimension"
        if bhatt[i][j] is None:
            robust = (
                f"the map explains none of {names[i]}'s slot-mean directions (held-out R² < "
                f"{MIN_R2:g} along each): these posteriors do not agree up to an affine map"
            )
        else:
            robust = (
                f"read posterior_bhattacharyya = {bhatt[i][j]:.3g} nats per dimension instead "
                f"(moment-matched, on the {dims[i][j]} directions the map resolves)"
            )
        lines.append(
            f"posterior_kl({names[i]} ‖ {names[j]}) is {shown}, degenerate (> {KL_DEGENERATE:g}): "
            f"the affine map fitted on the slot means is near-singular (condition number "
            f"{cond[i][j]:.2g}) and the posterior components are sharp, so the KL measures the "
            f"map, not the posteriors; {robust}"
        )
    return lines


def _symmetrise(mat: list[list[float | None]]) -> list[list[float | None]]:
    r = len(mat)
    out: list[list[float | None]] = [[None] * r for _ in range(r)]
    for i in range(r):
        for j in range(r):
            a, b = mat[i][j], mat[j][i]
            out[i][j] = None if a is None or b is None else (a + b) / 2
    return out


def compare_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: CompareConfig | None = None,
) -> Comparison:
    """Cross-seed comparison of ≥ 2 runs of one configuration; writes ``OUT/compare.json`` (the
    returned `Comparison`'s `Comparison.to_dict`) and ``OUT/compare.png`` (heatmaps of the SMCC,
    R² and posterior-agreement matrices).

    Raises:
        ValueError: fewer than 2 runs, a run given twice, runs whose configs differ in anything but
            seed / run name / output directory (the message names the differing keys), or too few
            images for the affine fits.
        FileNotFoundError: a run directory (or its config / weights) is missing.
    """
    from probslot.evaluation.evaluate import _Progress, encode_split
    from probslot.runs import load_split

    cfg = config or CompareConfig()
    if isinstance(run_dirs, (str, os.PathLike)):
        raise TypeError("run_dirs must be a list of run directories; got a single path")
    roots = [Path(r) for r in run_dirs]
    if len(roots) < 2:
        raise ValueError(
            f"compare needs at least 2 runs of one configuration (trained with different seeds); "
            f"got {len(roots)}"
        )
    resolved = [r.resolve() for r in roots]
    if len(set(resolved)) != len(resolved):
        dup = sorted({str(r) for r in roots if resolved.count(r.resolve()) > 1})
        raise ValueError(f"each run may be given once; repeated: {', '.join(dup)}")
    configs = [load_run_config(r) for r in roots]  # FileNotFoundError for a missing run
    diffs = config_differences(configs)
    if diffs:
        listing = "; ".join(
            f"{k}: " + ", ".join(f"{r.name}={v!r}" for r, v in zip(roots, vals, strict=True))
            for k, vals in diffs.items()
        )
        raise ValueError(
            "compare needs runs of ONE configuration (only trainer.seed, data.seed, "
            f"trainer.run_name and trainer.output_dir may differ); these keys differ: {listing}. "
            "Compare runs trained from the same config with different seeds"
        )
    for r in roots:
        if not RunPaths(r).weights.is_file():
            raise FileNotFoundError(
                f"{str(r)!r} has no model.safetensors; finish training it before comparing"
            )
    dataset = load_split(configs[0], cfg.split, cfg.data_overrides)
    size = len(dataset)
    if cfg.max_images is not None and cfg.max_images > size:
        raise ValueError(
            f"max_images={cfg.max_images} asks for more images than the {cfg.split!r} split "
            f"holds ({size}); pass max_images <= {size} or enlarge data.num_{cfg.split}"
        )
    m = cfg.max_images or size
    slot_dim = configs[0].model.slot_dim
    need = M.min_images(slot_dim + 2)  # what the per-slot SMCC / R² split needs
    if m < need:
        raise ValueError(
            f"the per-slot affine fit from {slot_dim}-d slots needs at least {need} images; the "
            f"{cfg.split!r} split gives {m}. Compare on more images (data.num_{cfg.split}, "
            "--max_images)"
        )

    encoded = []
    with _Progress(cfg.progress, f"encode {len(roots)} runs [{cfg.split}]", m * len(roots)) as bar:
        for r in roots:
            model = load_model(r)
            # the slot initialisation is random: every run sees the same draws, so that runs
            # with equal weights give equal slots
            torch.manual_seed(cfg.seed)
            encoded.append(encode_split(model, dataset, m, cfg.batch_size, progress=bar))
    names = [r.name for r in roots]
    n = len(roots)
    smcc = [[None] * n for _ in range(n)]
    r2 = [[None] * n for _ in range(n)]
    r2_krr = [[None] * n for _ in range(n)]
    chance = [[None] * n for _ in range(n)]
    kl = [[None] * n for _ in range(n)]
    bhatt = [[None] * n for _ in range(n)]
    cond = [[None] * n for _ in range(n)]
    dims = [[None] * n for _ in range(n)]
    mean_err = [[None] * n for _ in range(n)]
    has_posterior = all(e.mu is not None for e in encoded)
    with _Progress(cfg.progress, "pairs", n * n) as bar:
        for i, j in itertools.product(range(n), range(n)):
            a, b = encoded[i].slots.double(), encoded[j].slots.double()
            res = M.smcc_details(a, b, transform="affine", chance=i != j, seed=cfg.seed)
            smcc[i][j] = float(res.score)
            chance[i][j] = None if res.chance is None else float(res.chance)
            same = {"perm": res.perm, "seed": cfg.seed}  # the SMCC's matching and split
            r2[i][j] = float(M.slot_r2_details(a, b, transform="affine", **same).score)
            r2_krr[i][j] = float(M.slot_r2_details(a, b, transform="krr", **same).score)
            if has_posterior:
                agree = posterior_agreement(
                    encoded[i].mu,
                    encoded[i].var,
                    encoded[i].pi,
                    encoded[j].mu,
                    encoded[j].var,
                    encoded[j].pi,
                    res.perm,
                    seed=cfg.seed,
                    samples=cfg.posterior_samples,
                )
                kl[i][j] = agree["kl"] if math.isfinite(agree["kl"]) else None
                bhatt[i][j], cond[i][j] = agree["bhattacharyya"], agree["cond"]
                dims[i][j] = agree["dims"]
                mean_err[i][j] = agree["mean_error"]
            bar(1)
    pairs = list(itertools.combinations(range(n), 2))
    sym = {"smcc": _symmetrise(smcc), "r2": _symmetrise(r2), "r2_krr": _symmetrise(r2_krr)}
    directed = {"smcc": smcc, "r2": r2, "r2_krr": r2_krr, "smcc_chance": chance}
    consecutive = {
        key: _mean_std([mat[i][i + 1] for i in range(n - 1)]) for key, mat in sym.items()
    }
    notes, warnings = [], []
    if has_posterior:
        sym["posterior_kl"] = _symmetrise(kl)
        sym["posterior_bhattacharyya"] = _symmetrise(bhatt)
        sym["posterior_mean_error"] = _symmetrise(mean_err)
        directed["posterior_kl"] = kl
        directed["posterior_bhattacharyya"] = bhatt
        directed["posterior_mean_error"] = mean_err
        directed["posterior_map_condition"] = cond
        directed["posterior_resolved_dims"] = dims
        warnings = _degenerate_kl_warnings(kl, bhatt, cond, dims, names)
    else:
        notes.append(
            "aggregate-posterior agreement: not computed (slot attention runs have no posterior)"
        )
    from probslot.reports.figures import plot_heatmaps, save_figure

    out = Path(out_dir)
    # the heatmap shows the robust Bhattacharyya distance, not the mixture KL (`KL_DEGENERATE`)
    shown = {k: v for k, v in sym.items() if k not in ("r2_krr", "posterior_kl")}
    titles = {
        "smcc": "SMCC",
        "r2": "R² (affine)",
        "posterior_bhattacharyya": "posterior Bhattacharyya\n(nats/dim, moment-matched)",
        "posterior_mean_error": "posterior mean error",
    }
    png = save_figure(
        plot_heatmaps(
            shown, names, f"cross-seed agreement on {m} {cfg.split} images", titles=titles
        ),
        out / "compare.png",
    )
    result = Comparison(
        runs=tuple(str(r) for r in roots),
        names=tuple(names),
        split=cfg.split,
        num_images=m,
        num_slots=int(encoded[0].slots.shape[1]),
        slot_dim=int(encoded[0].slots.shape[2]),
        matrices={key: tuple(map(tuple, mat)) for key, mat in sym.items()},
        directed={key: tuple(map(tuple, mat)) for key, mat in directed.items()},
        summary={key: _mean_std([mat[i][j] for i, j in pairs]) for key, mat in sym.items()},
        consecutive=consecutive,
        notes=tuple(notes),
        warnings=tuple(warnings),
        figure=png.name,
        config=cfg,
    )
    result.save(out / COMPARE_FILE)
    return result
