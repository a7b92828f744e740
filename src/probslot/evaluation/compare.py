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
  nearly singular and the KL huge; read it together with the mean error.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from probslot import metrics as M
from probslot.io import RunPaths, load_model, load_run_config, write_metrics
from probslot.validation import check_choice, check_int, check_positive_int

__all__ = [
    "COMPARE_FILE",
    "IGNORED_KEYS",
    "CompareConfig",
    "compare_runs",
    "config_differences",
    "posterior_agreement",
]

COMPARE_FILE = "compare.json"
#: config keys that may differ between runs of one configuration
IGNORED_KEYS = frozenset({"trainer.seed", "data.seed", "trainer.run_name", "trainer.output_dir"})


@dataclass(frozen=True)
class CompareConfig:
    """Options of `compare_runs`.

    Attributes:
        split: data split encoded by every run (the first run's data config).
        max_images: use the first ``max_images`` images (None: the whole split).
        batch_size: images per forward pass.
        posterior_samples: Monte Carlo draws for the posterior KL.
        seed: seed of the identifiability split and of the posterior draws.
        progress: show a progress bar.
        data_overrides: dotted ``data.*`` settings applied to the first run's data config
            (`probslot.runs`).
    """

    split: str = "test"
    max_images: int | None = None
    batch_size: int = 64
    posterior_samples: int = 2000
    seed: int = 0
    progress: bool = True
    data_overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice("split", self.split, ("train", "val", "test"))
        for name in ("batch_size", "posterior_samples"):
            check_positive_int(name, getattr(self, name))
        if self.max_images is not None:
            check_positive_int("max_images", self.max_images)
        check_int("seed", self.seed, low=0)


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
        ``mean_error`` (relative matched-mean squared error, held-out images) and ``kl`` (nats per
        dimension, KL(q_i ‖ q_j pushed through the affine map), held-out images).
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

    sign, logdet = torch.linalg.slogdet(w)
    if sign == 0 or not torch.isfinite(logdet):
        return {"mean_error": mean_error, "kl": math.inf}
    q_i = AggregatePosterior(mu_i[held].double(), var_i[held].double(), pi_i[held].double())
    q_j = AggregatePosterior(mu_j[held].double(), var_j[held].double(), pi_j[held].double())
    z = q_i.sample(samples, generator=torch.Generator().manual_seed(seed))  # (s, d)
    back = torch.linalg.solve(w.T, (z - b).T).T  # (z - b) W⁻¹
    log_p = q_i.log_prob(z)
    log_q = q_j.log_prob(back) - logdet
    kl = float((log_p - log_q).mean() / d)
    return {"mean_error": mean_error, "kl": kl}


def _mean_std(values: Sequence[float]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    t = torch.tensor(vals, dtype=torch.float64)
    return {
        "mean": float(t.mean()),
        "std": float(t.std()) if len(vals) > 1 else 0.0,
        "n": len(vals),
    }


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
) -> dict[str, Any]:
    """Cross-seed comparison of ≥ 2 runs of one configuration; writes ``OUT/compare.json`` and
    ``OUT/compare.png`` (heatmaps of the SMCC, R² and posterior-agreement matrices).

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
                mean_err[i][j] = agree["mean_error"]
            bar(1)
    pairs = list(itertools.combinations(range(n), 2))
    sym = {"smcc": _symmetrise(smcc), "r2": _symmetrise(r2), "r2_krr": _symmetrise(r2_krr)}
    result: dict[str, Any] = {
        "runs": [str(r) for r in roots],
        "names": names,
        "split": cfg.split,
        "num_images": m,
        "num_slots": int(encoded[0].slots.shape[1]),
        "slot_dim": int(encoded[0].slots.shape[2]),
        "pairs": "all unordered pairs i < j (the authors' code: consecutive pairs only)",
        "matrices": sym,
        "directed": {"smcc": smcc, "r2": r2, "r2_krr": r2_krr, "smcc_chance": chance},
        "summary": {key: _mean_std([mat[i][j] for i, j in pairs]) for key, mat in sym.items()},
        "consecutive": {
            key: _mean_std([mat[i][i + 1] for i in range(n - 1)]) for key, mat in sym.items()
        },
        "notes": [],
    }
    if has_posterior:
        result["matrices"]["posterior_kl"] = _symmetrise(kl)
        result["matrices"]["posterior_mean_error"] = _symmetrise(mean_err)
        result["directed"]["posterior_kl"] = kl
        result["directed"]["posterior_mean_error"] = mean_err
        for key in ("posterior_kl", "posterior_mean_error"):
            mat = result["matrices"][key]
            result["summary"][key] = _mean_std([mat[i][j] for i, j in pairs])
    else:
        result["notes"].append(
            "aggregate-posterior agreement: not computed (slot attention runs have no posterior)"
        )
    from probslot.reports.figures import plot_heatmaps, save_figure

    out = Path(out_dir)
    shown = {k: v for k, v in result["matrices"].items() if k != "r2_krr"}
    png = save_figure(
        plot_heatmaps(shown, names, f"cross-seed agreement on {m} {cfg.split} images"),
        out / "compare.png",
    )
    result["figure"] = png.name
    result["config"] = asdict(cfg)
    write_metrics(out / COMPARE_FILE, result)
    return result
