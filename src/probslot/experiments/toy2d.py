"""Study ``toy2d``: the paper's 2D experiment (§6, Fig. 4) over all pairs of seeds.

**Data** (`probslot.data.Toy2DDataset`): each item is a set of 2D points from 3 of 5 Gaussian
modes (centres (0, 0), (±10, ±10), covariance 0.5·I), 128 points from each chosen mode (the
paper's text; the authors' code draws 128 in all). 1,000 training items; every run is scored on
the same 500 held-out items.

**Model** (`Toy2DModel`, after the authors' notebook, paper notes §6 and §11.10): a linear
encoder R² → R^d, PSA with K = 3 slots (exact EM, ``variant="exact"``: the linear encoder
already gives any linear map a query projection could; ``init="standard"``: μ(0) ~ N(0, I),
σ(0)² = 1, Eq. 3) run directly on the encoded points (a LayerNorm over d = 2 features would leave
only their sign, so the module's input norm is the identity here) with EM on each item's
standardised points (`probslot.nn.Standardize`, exact for a diagonal mixture; the authors'
code standardised the data instead, which makes every item's mean slot 0 and the slots of
different items incomparable), and a linear decoder: point n is reconstructed as Σ_k A_kn f_d(μ_k), each point from the slots
responsible for it. Loss: MSE; AdamW. No nonlinearity anywhere, so the map between two runs'
slots is affine by construction when EM finds the modes, and the study measures how often and
how exactly it does. EM from one random start merges two modes in some items (a local
optimum); the slots are therefore reported twice: from the fixed draw 0 of μ(0) (the paper's
single run of EM) and from the best of ``restarts`` = 8 draws by mixture log-likelihood
(`encode_toy`), EM's standard remedy.

**Analysis.** SMCC and R² (affine; R² also with the authors' kernel ridge) over **all pairs** of
runs (`probslot.experiments.analysis.pairwise_identifiability`). The paper reports SMCC
0.93 ± 0.04 and R² 0.50 ± 0.08 from the best 5 consecutive pairs of 15 runs (notes §11.10).
Figure: each run's aggregate posterior q(z) = (1/M) Σ_m Σ_k π_mk N(μ_mk, σ²_mk) (draws,
coloured by the mode each component covers) and all runs mapped onto run 0 by the pooled
least-squares affine map of their matched slot means.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from probslot.atomic import atomic_path
from probslot.data.toy2d import Toy2DDataset
from probslot.experiments.analysis import cell, mean_std, pairwise_identifiability
from probslot.experiments.spec import RunSpec
from probslot.experiments.study import Scale, Study, StudyContext, StudyOutput, register_study
from probslot.nn.extensions import Standardize
from probslot.nn.psa import ProbabilisticSlotAttention
from probslot.reports.tables import Table
from probslot.validation import check_choice, check_int, check_positive_int

__all__ = ["SLOTS_FILE", "Toy2DModel", "Toy2DStudy", "encode_toy", "run_toy", "train_toy"]

SLOTS_FILE = "slots.safetensors"
#: the paper's figures (§6), from the best 5 consecutive pairs of 15 runs
PAPER = {"smcc": (0.93, 0.04), "r2": (0.50, 0.08)}
#: held-out items every run is scored on (a data seed no training set uses)
TEST_SEED = 10_000


class Toy2DModel(nn.Module):
    """Linear encoder → PSA over the points → linear decoder (see the module docstring).

    ``forward(points (b, n, 2)) → (recon (b, n, 2), SlotPosterior)``.
    """

    def __init__(
        self, num_slots: int = 3, dim: int = 2, iters: int = 10, variant: str = "exact"
    ) -> None:
        super().__init__()
        check_choice("variant", variant, ("base", "exact", "proj"))
        self.encoder = nn.Linear(2, check_positive_int("dim", dim))
        self.grouping = ProbabilisticSlotAttention(
            num_slots, dim, dim, check_positive_int("iters", iters), variant=variant,
            init="standard", extensions=[Standardize()],
        )  # fmt: skip
        # a LayerNorm over 2 features maps every point to ±(1, −1): keep the points' geometry
        self.grouping.norm_inputs = nn.Identity()
        self.decoder = nn.Linear(dim, 2)

    def forward(self, points: Tensor, draw: Any = None) -> tuple[Tensor, Any]:
        post = self.grouping(self.encoder(points), draw=draw)
        per_slot = self.decoder(post.mu)  # (b, k, 2)
        return torch.einsum("bkn,bkc->bnc", post.attn, per_slot), post


def _points(dataset: Toy2DDataset) -> tuple[Tensor, Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it["points"] for it in items]), torch.stack([it["labels"] for it in items])


def toy_test_set(settings: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """(points (m, n, 2), labels (m, n)) of the held-out items every run is scored on."""
    test = Toy2DDataset(
        settings["num_test"], settings["points_per_mode"], standardize=False, seed=TEST_SEED
    )
    return _points(test)


def train_toy(settings: Mapping[str, Any], seed: int) -> tuple[Toy2DModel, list[float]]:
    """Train one `Toy2DModel` with `settings` (see `Toy2DStudy.scales`); returns it and the
    loss every 10 steps."""
    torch.manual_seed(seed)
    data = Toy2DDataset(
        settings["num_train"], settings["points_per_mode"], standardize=False, seed=seed
    )
    points, _ = _points(data)
    model = Toy2DModel(3, settings["dim"], settings["iters"], settings["variant"])
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=1e-6)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    batch = settings["batch_size"]
    model.train()
    for step in range(settings["steps"]):
        idx = torch.randint(len(points), (batch,), generator=gen)
        recon, _ = model(points[idx])
        loss = (recon - points[idx]).square().mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the toy2d run of seed {seed} diverged at step {step} (loss {float(loss.detach())}); "
                f"lower toy2d.lr (now {settings['lr']})"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            losses.append(float(loss.detach()))
    return model, losses


def _log_likelihood(model: Toy2DModel, z: Tensor, post: Any) -> Tensor:
    """(b,) log-likelihood of each item's encoded points under its fitted mixture as the E-step
    scores it, Σ_n log Σ_k π_k N(z_n; W_q μ_k, σ²_k) (W_q = I for ``variant="exact"``)."""
    var = post.var[:, :, None, :]  # (b, k, 1, d)
    diff = z[:, None, :, :] - model.grouping.to_q(post.mu)[:, :, None, :]  # (b, k, n, d)
    log_n = -0.5 * (diff.square() / var + var.log() + math.log(2 * math.pi)).sum(-1)
    log_pi = post.pi.clamp_min(torch.finfo(post.pi.dtype).tiny).log()[:, :, None]
    return torch.logsumexp(log_pi + log_n, dim=1).sum(-1)


@torch.no_grad()
def encode_toy(
    model: Toy2DModel, points: Tensor, labels: Tensor, restarts: int = 1
) -> dict[str, Tensor]:
    """Slots of `model` on held-out points: mu, var, pi, the mode each slot covers (majority
    label of the points it is most responsible for; −1 if none), recon, owner, loglik.

    ``restarts`` R > 1 runs EM from the fixed draws 0..R−1 of μ(0) and keeps, per item, the fit
    of highest mixture log-likelihood (EM's standard remedy for local optima, as scikit-learn's
    ``GaussianMixture(n_init=R)``); R = 1 is draw 0 alone.
    """
    model.eval()
    check_positive_int("restarts", restarts)
    z = model.encoder(points)
    best = None
    for draw in range(restarts):
        recon, post = model(points, draw=draw)
        ll = _log_likelihood(model, z, post)
        fit = {"mu": post.mu, "var": post.var, "pi": post.pi, "attn": post.attn, "recon": recon,
               "loglik": ll}  # fmt: skip
        if best is None:
            best = fit
            continue
        better = ll > best["loglik"]
        for key, value in fit.items():
            shape = (-1,) + (1,) * (value.ndim - 1)
            best[key] = torch.where(better.view(shape), value, best[key])
    assert best is not None
    owner = best.pop("attn").argmax(1)  # (m, n) slot most responsible for each point
    m, k = best["pi"].shape
    modes = torch.full((m, k), -1, dtype=torch.long)
    for slot in range(k):
        mine = owner == slot
        for i in range(m):
            if mine[i].any():
                modes[i, slot] = torch.mode(labels[i][mine[i]]).values
    return {**best, "modes": modes, "owner": owner}


def _scores(enc: Mapping[str, Tensor], points: Tensor, labels: Tensor) -> dict[str, float]:
    # a point is grouped right when the slot most responsible for it covers its mode
    covered = enc["modes"].gather(1, enc["owner"]) == labels
    found = torch.tensor([len(set(row.tolist()) - {-1}) == 3 for row in enc["modes"]])
    return {
        "mse": float((enc["recon"] - points).square().mean()),
        "purity": float(covered.float().mean()),
        "modes_found": float(found.float().mean()),
    }


def run_toy(payload: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """The worker's ``toy2d`` kind: train, score on the shared held-out items, save the slots."""
    from safetensors.torch import save_file

    settings, seed = dict(payload["settings"]), int(payload["seed"])
    begin = time.time()
    model, losses = train_toy(settings, seed)
    points, labels = toy_test_set(settings)
    single = encode_toy(model, points, labels, 1)
    best = encode_toy(model, points, labels, settings["restarts"])
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: best[k].contiguous() for k in ("mu", "var", "pi", "modes")}
    tensors.update({f"{k}_single": single[k].contiguous() for k in ("mu", "var", "pi", "modes")})
    with atomic_path(run_dir / SLOTS_FILE) as tmp:
        save_file(tensors, str(tmp))
    scores = _scores(best, points, labels)
    scores.update({f"{k}_single": v for k, v in _scores(single, points, labels).items()})
    return {
        "headline": scores,
        "losses": losses,
        "slots": SLOTS_FILE,
        "train_seconds": time.time() - begin,
    }


def _load_slots(ctx: StudyContext, spec: RunSpec) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ctx.run_dir(spec.name) / SLOTS_FILE))


def _affine_onto(target: Tensor, source: Tensor, perm: Tensor, weights: Tensor) -> Tensor:
    """source (m, k, d) mapped onto target's space by one least-squares affine map fitted on the
    matched slot means (weights √π of both), applied to every source slot."""
    m, k, d = source.shape
    matched = source.gather(1, perm[..., None].expand(m, k, d))
    x = torch.cat([matched.reshape(-1, d), torch.ones(m * k, 1, dtype=source.dtype)], 1)
    w = weights.reshape(-1, 1).sqrt()
    coef = torch.linalg.lstsq(x * w, target.reshape(-1, d) * w).solution
    full = torch.cat([source.reshape(-1, d), torch.ones(m * k, 1, dtype=source.dtype)], 1)
    return (full @ coef).reshape(m, k, d)


def _posterior_figure(
    slots: Sequence[Mapping[str, Tensor]], names: Sequence[str], perms: Mapping, path: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probslot.reports.figures import object_colour, save_figure

    n = len(slots)
    fig, axes = plt.subplots(1, n + 1, figsize=(2.6 * (n + 1), 2.8))
    gen = torch.Generator().manual_seed(0)
    for ax, s, name in zip(axes[:n], slots, names, strict=True):
        mu, var, pi, modes = s["mu"].double(), s["var"].double(), s["pi"].double(), s["modes"]
        m, k, d = mu.shape
        comp = torch.multinomial((pi / m).reshape(-1), 3000, replacement=True, generator=gen)
        z = mu.reshape(-1, d)[comp] + var.reshape(-1, d)[comp].sqrt() * torch.randn(
            3000, d, generator=gen, dtype=torch.float64
        )
        colours = [object_colour(int(c) + 1) for c in modes.reshape(-1)[comp]]
        ax.scatter(z[:, 0], z[:, -1], s=1, c=colours, alpha=0.4)
        ax.set_title(f"q(z), {name}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[n]
    ref = slots[0]["mu"].double()
    markers = "o^sDvP*Xh<>"
    for j, (s, name) in enumerate(zip(slots, names, strict=True)):
        mu = s["mu"].double()
        if j == 0:
            aligned = mu
        else:
            weights = slots[0]["pi"].double() * s["pi"].double().gather(1, perms[0, j])
            aligned = _affine_onto(ref, mu, perms[0, j], weights)
        pts = aligned.reshape(-1, aligned.shape[-1])[:600]
        ax.scatter(pts[:, 0], pts[:, -1], s=6, marker=markers[j % len(markers)], alpha=0.5,
                   label=name)  # fmt: skip
    ax.set_title("slot means, all runs\naffinely aligned to the first", fontsize=8)
    ax.legend(fontsize=5, markerscale=1.5, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)


@register_study
class Toy2DStudy(Study):
    name = "toy2d"
    title = "toy2d: the paper's 2D experiment over all pairs of seeds (paper §6, Fig. 4)"
    description = (
        "PSA (K = 3) on sets of 2D points from 3 of 5 Gaussian modes; linear encoder and "
        "decoder; SMCC and R² between the slots of every pair of runs on 500 shared held-out "
        "items."
    )
    _base = {
        "num_train": 1000,
        "num_test": 500,
        "points_per_mode": 128,
        "dim": 2,
        "iters": 10,
        "variant": "exact",
        "lr": 0.02,
        "batch_size": 100,
        "steps": 600,
        "restarts": 8,
    }
    scales = {
        "cpu": Scale("cpu", 5, "5 seeds, about a minute each on one core", _base, min_seeds=2),
        "gpu": Scale(
            "gpu",
            15,
            "15 seeds (the authors' count); the model is too small to gain "
            "from a GPU, so it runs on the CPU",
            _base,
            min_seeds=2,
        ),  # fmt: skip
        "tiny": Scale(
            "tiny",
            2,
            "smoke test: 2 seeds, 20 steps",
            {**_base, "num_train": 100, "num_test": 60, "points_per_mode": 16, "steps": 20},
            min_seeds=2,
        ),  # fmt: skip
    }

    def plan(self, scale: Scale, seeds: int, overrides: Sequence[str] = ()) -> list[RunSpec]:
        settings = dict(scale.settings)
        for item in overrides:
            key, _, value = item.partition("=")
            key = key.removeprefix("toy2d.")
            if key not in settings or not value:
                raise ValueError(
                    "toy2d overrides are toy2d.KEY=VALUE with KEY one of "
                    f"{', '.join(settings)}; got {item!r}"
                )
            settings[key] = type(settings[key])(value)
        check_int("steps", settings["steps"], low=1)
        return [
            RunSpec(f"psa-seed{s}", "PSA", s, "toy2d", {"settings": settings, "seed": s})
            for s in range(seeds)
        ]

    def analyse(self, ctx: StudyContext) -> StudyOutput:
        specs = list(ctx.specs)
        names = [s.name for s in specs]
        slots = [_load_slots(ctx, s) for s in specs]
        restarts = specs[0].payload["settings"]["restarts"]
        heads = [ctx.results[s.name]["headline"] for s in specs]
        summary: dict[str, Any] = {"restarts": restarts}
        perms = None
        for suffix, key in (("", ""), ("_single", "_single")):
            pairs = pairwise_identifiability([s["mu" + key] for s in slots], names)
            perms = pairs["perms"] if not suffix else perms
            for name in ("smcc", "r2", "r2_krr"):
                summary[name + suffix] = {k: v for k, v in pairs[name].items() if k != "values"}
            summary["smcc_chance" + suffix] = {
                k: v for k, v in pairs["smcc_chance"].items() if k != "pairs"
            }
            best5 = sorted((p["smcc"] for p in pairs["smcc"]["pairs"]), reverse=True)[:5]
            summary["smcc_best5_pairs" + suffix] = mean_std(best5)
            for name in ("mse", "purity", "modes_found"):
                summary[name + suffix] = mean_std(h[name + key] for h in heads)
        summary["paper"] = {k: {"mean": v[0], "std": v[1]} for k, v in PAPER.items()}
        n_pairs = len(summary["smcc"]["pairs"])
        table = Table(
            "toy2d: cross-seed identifiability (mean ± std over pairs)",
            ("figure", f"best of {restarts} EM starts, all {n_pairs} pairs of {len(specs)} runs",
             "best 5 pairs", f"one EM start, all {n_pairs} pairs", "best 5 pairs",
             "paper (best 5 consecutive pairs of 15 runs)"),
            [
                ("SMCC", cell(summary["smcc"]), cell(summary["smcc_best5_pairs"]),
                 cell(summary["smcc_single"]), cell(summary["smcc_best5_pairs_single"]),
                 "0.93 ± 0.04"),
                ("R² (affine)", cell(summary["r2"]), "", cell(summary["r2_single"]), "", "–"),
                ("R² (kernel ridge, authors' code)", cell(summary["r2_krr"]), "",
                 cell(summary["r2_krr_single"]), "", "0.50 ± 0.08"),
                ("SMCC of shuffled slots (chance)", cell(summary["smcc_chance"]), "",
                 cell(summary["smcc_chance_single"]), "", "–"),
            ],
        )  # fmt: skip
        runs = Table(
            "toy2d: each run on the held-out items (best of the EM starts / one start)",
            ("run", "MSE", "points grouped by their mode", "items with all 3 modes found",
             "minutes"),
            [
                (n, f"{h['mse']:.4f} / {h['mse_single']:.4f}",
                 f"{h['purity']:.3f} / {h['purity_single']:.3f}",
                 f"{h['modes_found']:.3f} / {h['modes_found_single']:.3f}",
                 f"{ctx.results[n]['seconds'] / 60:.1f}")
                for n, h in zip(names, heads, strict=True)
            ],
        )  # fmt: skip
        fig = _posterior_figure(slots, names, perms, ctx.figure_path("toy2d_posteriors.png"))
        s = summary["smcc"]
        reading = [
            f"SMCC over all {s['n']} pairs of {len(specs)} runs: {cell(s)} with the best of "
            f"{restarts} EM starts per item, {cell(summary['smcc_single'])} with one start "
            f"(paper 0.93 ± 0.04 from the best 5 consecutive pairs of 15 runs; our best 5 pairs: "
            f"{cell(summary['smcc_best5_pairs'])} / {cell(summary['smcc_best5_pairs_single'])}); "
            f"chance level {cell(summary['smcc_chance'])}.",
            f"R²: {cell(summary['r2'])} with an affine map, {cell(summary['r2_krr'])} with the "
            "authors' kernel ridge (paper 0.50 ± 0.08).",
            f"One EM start grouped {cell(summary['purity_single'])} of the held-out points by "
            f"their mode and found all three modes in {cell(summary['modes_found_single'])} of "
            f"the items; the best of {restarts} starts: {cell(summary['purity'])} and "
            f"{cell(summary['modes_found'])}. Where EM merges two modes into one slot the slots "
            "of two runs disagree, and that, not the model, is what lowers the one-start SMCC.",
        ]
        return StudyOutput(summary, [table, runs], [fig], reading)
