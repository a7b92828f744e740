"""The typed functions behind ``probslot aggregate``, ``probslot sample`` and ``probslot prune``.

* `aggregate`: fit the aggregate posterior q(z) of a trained PSA run on one data split and write
  ``RUN_DIR/posterior.safetensors``.
* `sample`: draw new scenes slot by slot from q(z), decode them and write a PNG grid of each
  scene with its per-slot decomposition.
* `prune`: automatic relevance determination (paper Eq. 7) on held-out data: kept slots vs the
  true number of objects, FLOPs and time saved, quality change, and a sweep over τ written to
  ``RUN_DIR/pruning/`` and ``RUN_DIR/pruning.json``.
* `check_run_posterior`: whether a run's posterior belongs to its weights (its ``model_hash``,
  see `probslot.posterior.fingerprint`); `sample` and ``probslot evaluate`` refuse one that does
  not.

Every function validates its input (run directory, split, counts, τ) before any work, raises
`FileNotFoundError` / `ValueError` / `TypeError` with the fix in the message (the CLI prints it as
one line) and returns the path it wrote. The data of a split is rebuilt from the run's
``config.yaml``. See docs/pruning.md.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from probslot.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from probslot.io import RunPaths, load_model, load_run_config
from probslot.posterior.aggregate import AggregatePosterior, job_process_group
from probslot.posterior.fingerprint import file_sha256, model_fingerprint
from probslot.posterior.mixture import GaussianMixture
from probslot.posterior.pruning import (
    DEFAULT_TAUS,
    PruningReport,
    headline_tau,
    plot_sweep,
    prune_analysis,
)
from probslot.registry import did_you_mean
from probslot.runs import split_loader, with_data_overrides
from probslot.validation import check_int, check_positive_int, check_tau

__all__ = [
    "POSTERIOR_FILE",
    "aggregate",
    "check_run_posterior",
    "demo_posterior",
    "file_sha256",
    "load_psa_run",
    "prune",
    "sample",
    "sample_figure",
    "sample_grid",
    "split_loader",
]

#: the aggregate posterior of a run, ``RUN_DIR/posterior.safetensors``
POSTERIOR_FILE = "posterior.safetensors"
_SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------- helpers
def _check_run_dir(run_dir: str | Path) -> RunPaths:
    if not isinstance(run_dir, (str, Path)) or str(run_dir) == "":
        raise TypeError(f"run_dir must be a path to a run directory; got {run_dir!r}")
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"run directory {str(root)!r} does not exist. Pass a run directory written by "
            "`probslot train` or `probslot demo` (e.g. runs/demo)"
        )
    return RunPaths(root)


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        suggestion = did_you_mean(str(split), list(_SPLITS))
        raise ValueError(f"unknown split {split!r}.{suggestion} Available: {', '.join(_SPLITS)}")
    return split


def load_psa_run(run_dir: str | Path, purpose: str) -> tuple[nn.Module, Any, RunPaths]:
    """(model in eval mode, RunConfig, RunPaths) of a PSA run; a clear error for SA runs.

    Args:
        run_dir: run directory (config.yaml + model.safetensors).
        purpose: what the caller needs π/the posterior for, quoted in the SA error.
    """
    from probslot.nn import ProbabilisticSlotAttention, keep_gate_of, unwrap_grouping

    paths = _check_run_dir(run_dir)
    cfg = load_run_config(paths.root)
    model = load_model(paths.root)
    grouping = unwrap_grouping(getattr(model, "grouping", None))  # inside a keep gate
    if not isinstance(grouping, ProbabilisticSlotAttention):
        kind = type(grouping).__name__
        what, short = (
            ("the AE baseline", "the AE")
            if kind == "FlatSlots"
            else ("a slot-attention model", "SA")
        )
        gate = keep_gate_of(model)
        hint = "; its keep gate is measured by probslot.posterior.keep_gate_result" if gate else ""
        raise ValueError(
            f"run {str(paths.root)!r} is {what} (grouping {kind}); {short} has no "
            f"posterior (no slot Gaussians or weights pi), so {purpose} needs a PSA run. "
            f"Train one of the presets PSA, PSA-Proj or PSA-NoA{hint}"
        )
    return model, cfg, paths


# ---------------------------------------------------------------------- aggregate
def aggregate(
    run_dir: str,
    split: str = "train",
    max_images: int | None = None,
    progress: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Fit the aggregate posterior q(z) of a PSA run on a data split; write RUN_DIR/posterior.safetensors.

    Args:
        run_dir: run directory written by `probslot train` or `probslot demo`.
        split: data split of the run's config to fit on (train, val or test).
        max_images: use at most this many images (default: the whole split).
        progress: show a progress bar.
        overrides: data overrides such as data.num_train=5000 (also as bare arguments;
            `probslot.runs`).
    """
    _check_split(split)
    if max_images is not None:
        check_positive_int("max_images", max_images)
    model, cfg, paths = load_psa_run(run_dir, "`probslot aggregate`")
    cfg = with_data_overrides(cfg, overrides or [])
    loader = split_loader(cfg, split)
    metadata = {  # fit adds model_hash, the fingerprint of the model's weights
        "model_file": paths.weights.name,
        "dataset": cfg.data.name,
        "split": split,
        "image_size": model.image_size[0],
    }
    rank, world = job_process_group()  # several processes under torchrun (docs/scaling.md)
    if world > 1:
        posterior = AggregatePosterior.fit_distributed(
            model, loader.dataset, loader.batch_size, collate_fn=loader.collate_fn,
            max_images=max_images, progress=progress, metadata=metadata,
        )  # fmt: skip
        if rank != 0:  # rank 0 writes the file
            return paths.root / POSTERIOR_FILE
    else:
        posterior = AggregatePosterior.fit(
            model, loader, max_images=max_images, progress=progress, metadata=metadata
        )
    path = posterior.save(paths.root / POSTERIOR_FILE)
    print(
        f"aggregate posterior of {posterior.num_images} {split} images × {posterior.num_slots} "
        f"slots (d = {posterior.dim}) written to"
    )
    print(f"  {path}")
    return path


# ---------------------------------------------------------------------- the run's posterior
def check_run_posterior(
    posterior: GaussianMixture, model: nn.Module, paths: RunPaths, path: Path | None = None
) -> str | None:
    """Refuse a posterior fitted with other weights than the run's model (its ``model_hash``).

    ``model_hash`` is `model_fingerprint(model)`, whether the posterior was fitted by
    `probslot aggregate` or through `AggregatePosterior.fit`. Older versions of `probslot
    aggregate` recorded the sha256 of the ``model.safetensors`` file instead: such a file is
    accepted when that hash matches the run's weights file, and the returned note says so. A
    posterior without ``model_hash`` (built from arrays) is accepted.

    Returns:
        None, or a one-line note for an accepted file of an older probslot.

    Raises:
        ValueError: the posterior belongs to other weights (the run was retrained since); the
            message says to re-run `probslot aggregate`.
    """
    path = path if path is not None else paths.root / POSTERIOR_FILE
    recorded = posterior.metadata.get("model_hash")
    if recorded is None or recorded == model_fingerprint(model):
        return None
    if paths.weights.is_file() and recorded == file_sha256(paths.weights):
        return (
            f"{path.name} records the sha256 of {paths.weights.name} as its model_hash (written "
            "by an older probslot); it matches, so it is used. Re-run `probslot aggregate "
            f"--run_dir {paths.root}` to record the weights' fingerprint instead"
        )
    raise ValueError(
        f"{str(path)!r} was fitted with other weights than {paths.weights.name} "
        f"(model_hash {str(recorded)[:12]}… differs); the run was retrained since. Re-run "
        f"`probslot aggregate --run_dir {paths.root}`"
    )


def _load_posterior(paths: RunPaths, model: nn.Module) -> AggregatePosterior:
    path = paths.root / POSTERIOR_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist: fit the aggregate posterior first with "
            f"`probslot aggregate --run_dir {paths.root} --split train`"
        )
    return AggregatePosterior.load(path, dim=int(model.grouping.slot_dim))


# ---------------------------------------------------------------------- sample


def _to_uint8(images: Tensor) -> Tensor:
    """(..., 3, h, w) float in [0, 1] → (..., h, w, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1)


def sample_grid(
    scenes: Tensor, parts: Tensor | None = None, scale: int = 1, pad: int = 2
) -> Tensor:
    """(H', W', 3) uint8 grid image.

    Args:
        scenes: (s, 3, h, w) images in [0, 1].
        parts: (s, k, 3, h, w) per-slot decompositions in [0, 1], or None. With parts, row i is
            scene i followed (after a wider gap) by its k parts; without, the scenes fill a
            near-square grid.
        scale: nearest-neighbour upscaling factor of every cell.
        pad: gap between cells in pixels (light grey).
    """
    s, _, h, w = scenes.shape
    cells = scenes.repeat_interleave(scale, -2).repeat_interleave(scale, -1)  # (s, 3, H, W)
    ch, cw = h * scale, w * scale
    if parts is not None:
        k = parts.shape[1]
        up = parts.repeat_interleave(scale, -2).repeat_interleave(scale, -1)  # (s, k, 3, H, W)
        rows, cols, gap = s, 1 + k, 3 * pad
    else:
        cols = max(1, math.ceil(math.sqrt(s)))
        rows, gap = math.ceil(s / cols), 0
    height = rows * ch + (rows + 1) * pad
    width = cols * cw + (cols + 1) * pad + gap
    grid = torch.full((height, width, 3), 200, dtype=torch.uint8)
    for i in range(s):
        r, c = (i, 0) if parts is not None else divmod(i, cols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        grid[y : y + ch, x : x + cw] = _to_uint8(cells[i])
        if parts is not None:
            for j in range(k):
                xj = pad + (1 + j) * (cw + pad) + gap
                grid[y : y + ch, xj : xj + cw] = _to_uint8(up[i, j])
    return grid


def sample_figure(
    scenes: Tensor,
    parts: Tensor | None = None,
    shares: Tensor | None = None,
    scale: int = 1,
    pad: int = 2,
) -> Any:
    """The `sample_grid` image as a titled matplotlib Figure: column headers, row numbers and
    each slot's π written in its cell.

    Args:
        scenes, parts, scale, pad: as in `sample_grid`.
        shares: (s, k) π of each part, in the order of `parts`: the share of the scene's pixels
            in the slot's decoder mask. A sampled slot has no encoder π (it was never inferred
            from an image); this is its decoder-side counterpart, π_k = (1/N) Σ_n A_nk with the
            decoder masks in place of the E-step's responsibilities.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    grid = sample_grid(scenes, parts, scale=scale, pad=pad)
    s, _, h, w = scenes.shape
    ch, cw = h * scale, w * scale
    height, width = grid.shape[:2]
    dpi, top, bottom = 100, 0.95, 0.1  # margins in inches
    fw = max(width / dpi + 0.55, 5.0)  # wide enough for the title
    left = (fw - width / dpi) / 2
    fh = height / dpi + top + bottom
    fig = plt.figure(figsize=(fw, fh), dpi=dpi)
    ax = fig.add_axes((left / fw, bottom / fh, width / dpi / fw, height / dpi / fh))
    ax.imshow(grid.numpy(), interpolation="nearest")
    ax.set_axis_off()
    text = {"fontsize": 7, "ha": "center"}
    if parts is not None:
        k = parts.shape[1]
        gap = 3 * pad
        ax.text(pad + cw / 2, -4, "generated\nscene", va="bottom", **text)
        for j in range(k):
            x = pad + (1 + j) * (cw + pad) + gap
            ax.text(x + cw / 2, -4, f"slot {j + 1}", va="bottom", **text)
            for i in range(s if shares is not None else 0):
                y = pad + i * (ch + pad)
                ax.text(
                    x + 2, y + ch - 2, f"π {float(shares[i, j]):.2f}", fontsize=6.5, color="white",
                    va="bottom", ha="left",
                    bbox={"facecolor": "black", "alpha": 0.55, "pad": 0.8, "lw": 0},
                )  # fmt: skip
        for i in range(s):
            ax.text(
                -4, pad + i * (ch + pad) + ch / 2, str(i + 1), va="center", ha="right", fontsize=7
            )
        title = (
            f"{s} generated scenes: every slot drawn i.i.d. from\nthe aggregate posterior q(z), "
            "then decoded; π = the slot's share\nof the scene (its decoder mask), largest first"
        )
    else:
        title = f"{s} generated scenes: every slot drawn i.i.d. from\nthe aggregate posterior q(z)"
    fig.suptitle(title, fontsize=8, y=1 - 0.08 / fh, va="top")
    return fig


def _write_figure(path: Path, fig: Any) -> Path:
    """Save a Figure as PNG atomically, pixel for pixel (no tight bounding box), and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def sample(
    run_dir: str,
    num: int = 64,
    out: str | None = None,
    num_slots: int | None = None,
    seed: int = 0,
) -> Path:
    """Generate new scenes by decoding slots drawn i.i.d. from the aggregate posterior; write a PNG grid.

    Each row shows a generated scene and then its slots (per-slot image × mask, largest first)
    for additive decoders; for non-additive decoders the grid shows the scenes only.

    Args:
        run_dir: run directory holding posterior.safetensors (from `probslot aggregate`).
        num: number of scenes to generate.
        out: PNG file to write (default RUN_DIR/samples.png).
        num_slots: slots per generated scene (default: the model's K).
        seed: random seed of the slot draws.
    """
    check_positive_int("num", num)
    if num_slots is not None:
        check_positive_int("num_slots", num_slots)
    check_int("seed", seed, low=0)
    if out is not None and not str(out).lower().endswith(".png"):
        raise ValueError(f"out must be a .png file; got {out!r}")
    model, _, paths = load_psa_run(run_dir, "`probslot sample`")
    posterior = _load_posterior(paths, model)
    note = check_run_posterior(posterior, model, paths)
    if note is not None:
        print(f"note: {note}")
    k = num_slots or posterior.num_slots
    generator = torch.Generator().manual_seed(seed)
    slots = posterior.sample_scenes(num, k, generator=generator)  # (s, k, d)
    device = next(iter(model.parameters())).device
    scenes, parts, shares = [], [], []
    with torch.inference_mode():
        for chunk in slots.split(64):
            dec = model.decode(chunk.to(device))
            scenes.append(dec.recon.clamp(0, 1).cpu())
            if dec.masks is not None and dec.per_slot is not None:
                comp = (dec.per_slot * dec.masks).clamp(0, 1).cpu()  # (b, k, 3, h, w)
                share = dec.masks.flatten(2).mean(-1).cpu()  # (b, k) π: share of the scene
                order = share.argsort(dim=1, descending=True)
                rows = torch.arange(comp.shape[0])[:, None]
                parts.append(comp[rows, order])
                shares.append(share[rows, order])
    images = torch.cat(scenes)
    decomposition = torch.cat(parts) if parts else None
    scale = max(1, math.ceil(64 / max(model.image_size)))
    fig = sample_figure(images, decomposition, torch.cat(shares) if shares else None, scale=scale)
    target = Path(out) if out is not None else paths.root / "samples.png"
    _write_figure(target, fig)
    what = f"with their {k} slots each" if decomposition is not None else "(non-additive decoder)"
    print(f"{num} generated scenes {what} written to")
    print(f"  {target}")
    return target


# ---------------------------------------------------------------------- prune
def _targets_met(report: PruningReport, tau: float) -> dict[str, Any]:
    r = report.at(tau)
    return {
        "slot_count_mae<=0.5": r.mae(report.headline) <= 0.5,
        "decoder_flops_saved>=40%": r.decoder_flops_saved >= 0.40,
        "mse_worse<=5%": r.mse_change_pct <= 5.0,
    }


def prune(
    run_dir: str,
    tau: float | None = None,
    split: str = "test",
    sweep: bool = False,
    max_images: int | None = None,
    progress: bool = True,
    in_em: bool | None = None,
    merge_dist: float | None = None,
    prune_start: int | None = None,
    seed: int | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Automatic relevance determination (keep slots with pi > tau, paper Eq. 7) on held-out data.

    Reports the mean number of kept slots, the MAE to the true number of objects (background
    counted as a slot — the headline — and not), decoder and whole-model FLOPs saved, decoder
    time saved and the change in MSE and FG-ARI. Writes RUN_DIR/pruning.json and, under
    RUN_DIR/pruning/, sweep.md, sweep.csv (and sweep.png with --sweep). A model with a learned
    keep gate (model.keep_gate) gets one more row, "learned keep gate": the same figures for
    the slots its gate keeps (pruning.json: keep_gate).

    Args:
        run_dir: run directory of a PSA model.
        tau: relevance threshold in [0, 1) reported as the headline; default: the run
            config's prune.tau, else the model's prune_tau when it was trained with ARD inside
            EM, else 0.05.
        split: held-out split of the run's data config (test or val; train is allowed).
        sweep: also evaluate tau in 0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3 and plot the sweep.
        max_images: evaluate at most this many images (default: the whole split).
        progress: print progress lines.
        in_em: apply tau inside the EM iterations (the slots' tokens go to the surviving slots)
            instead of thresholding the final pi; default: exactly when the model was trained
            with the grouping option prune_tau > 0 (or merge_dist > 0).
        merge_dist: also merge slots whose appearance Gaussians coincide, inside EM after its
            last iteration, at this distance (e.g. 1.0; docs/pruning.md); default: the run
            config's prune.merge_dist, else the model's own setting (0 = no merging unless it
            was trained with it).
        prune_start: in-EM mode: the first EM iteration after which tau applies (e.g. 3 of 5:
            slots settle on their tokens before their weight is judged, so a small object
            survives); default: the run config's prune.prune_start, else the model's own.
        seed: default: the model's fixed draw of PSA's initial slots (deterministic); a seed:
            seeded random draws, one per batch, to see how much the figures move with the draw.
        overrides: data overrides such as data.num_test=1024 (also as bare arguments;
            `probslot.runs`).
    """
    if tau is not None:
        tau = check_tau(tau)
    _check_split(split)
    if max_images is not None:
        check_positive_int("max_images", max_images)
    model, cfg, paths = load_psa_run(run_dir, "ARD pruning (`probslot prune`)")
    cfg = with_data_overrides(cfg, overrides or [])
    # flags first, then the run config's `prune` section, then the model's own settings
    tau = cfg.prune.tau if tau is None else tau
    merge_dist = cfg.prune.merge_dist if merge_dist is None else merge_dist
    prune_start = cfg.prune.prune_start if prune_start is None else prune_start
    tau = headline_tau(model, tau)
    loader = split_loader(cfg, split)
    taus = tuple(sorted(set(DEFAULT_TAUS) | {tau})) if sweep else (tau,)
    report = prune_analysis(
        model,
        loader,
        taus,
        max_images=max_images,
        progress=progress,
        in_em=in_em,
        merge_dist=merge_dist,
        prune_start=prune_start,
        seed=seed,
    )

    out_dir = paths.root / "pruning"
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "sweep.md"
    atomic_write_text(
        table,
        f"# ARD pruning sweep: {paths.root.name}, {split} split, {report.num_images} images, "
        f"K = {report.num_slots}\n\nHeadline MAE convention: background counts as a slot "
        f"(target = objects + 1). Always answering the median count would score MAE "
        f"{report.constant_mae:.3f}.\n\n{report.to_markdown()}",
    )
    atomic_write_text(out_dir / "sweep.csv", report.to_csv())
    written = [table, out_dir / "sweep.csv"]
    if sweep:
        png = out_dir / "sweep.png"
        atomic_write(png, lambda fh: plot_sweep(report, fh, tau=tau))
        written.append(png)
    summary = {
        "run_dir": str(paths.root),
        "split": split,
        "tau": tau,
        "headline_convention": report.headline,
        "targets_met": _targets_met(report, tau),
        "model_file_sha256": file_sha256(paths.weights),
        **report.to_dict(),
    }
    json_path = atomic_write_text(
        paths.root / "pruning.json", json.dumps(summary, indent=2, allow_nan=False) + "\n"
    )
    print(report.summary(tau))
    print("  pi per image, sorted (mean): " + ", ".join(f"{p:.3f}" for p in report.pi_sorted_mean))
    print("written:")
    for p in (json_path, *written):
        print(f"  {p}")
    return json_path


# ---------------------------------------------------------------------- demo (issue 5, item 4)
def demo_posterior(
    run_dir: str | Path,
    max_images: int | None = 2000,
    num_samples: int = 16,
    tau: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """The posterior steps of the main job, after training: aggregate → sample → prune --sweep.

    For `probslot demo` / `make demo` to call on its run directory. `max_images` bounds the
    training images the aggregate posterior is fitted on (the paper notes a large subset
    suffices; 2000 keeps the demo's extra time around a minute on a CPU). Slot-attention runs
    are skipped (an empty dict), since they have no posterior.

    The pruning headline is at `tau` (None: as `prune`).

    Returns:
        ``{"posterior": ..., "samples": ..., "pruning": ...}`` paths inside `run_dir`.
    """
    if tau is not None:
        tau = check_tau(tau)
    paths = _check_run_dir(run_dir)
    # the config says which grouping the run has; no need to build the model for that
    grouping = load_run_config(paths.root).model.resolve().grouping
    if grouping in ("sa", "ae"):
        what = "slot attention" if grouping == "sa" else "the AE baseline"
        print(f"{paths.root}: {what} has no posterior; skipping aggregate/sample/prune")
        return {}
    posterior = aggregate(str(paths.root), "train", max_images=max_images, progress=progress)
    samples = sample(str(paths.root), num=num_samples, seed=seed)
    pruning = prune(str(paths.root), tau=tau, split="test", sweep=True, progress=progress)
    return {"posterior": posterior, "samples": samples, "pruning": pruning}
