"""Figures from saved results (matplotlib, Agg backend): evaluation panels, training curves,
comparison heatmaps. Nothing here touches a live trainer.

Every writer returns the paths it wrote; PNGs are written atomically.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

from probslot.atomic import atomic_write_bytes  # noqa: E402

__all__ = [
    "figure_png",
    "label_colours",
    "plot_heatmaps",
    "plot_training_curves",
    "read_csv_logs",
    "save_figure",
    "write_eval_panels",
]


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig: Any, path: Path) -> Path:
    return atomic_write_bytes(path, figure_png(fig))


def label_colours(labels: Tensor, num: int) -> np.ndarray:
    """(b, H, W) integer labels → (b, H, W, 3) RGB with a fixed palette (label 0 dark grey)."""
    cmap = plt.get_cmap("tab10")
    palette = np.array([(0.15, 0.15, 0.15)] + [cmap(i % 10)[:3] for i in range(max(num, 1))])
    return palette[labels.clamp(0, num).cpu().numpy()]


def _img(x: Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] → (H, W, 3) numpy."""
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], title: str) -> Any:
    cols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.4 * cols + 1.2, 1.4 * len(rows) + 0.4), squeeze=False
    )
    for r, (name, imgs) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(imgs):
                ax.imshow(imgs[c], interpolation="nearest")
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def write_eval_panels(panels: Mapping[str, Tensor], out_dir: Path) -> dict[str, Path]:
    """Write the panels of `probslot evaluate` into `out_dir`.

    Keys of `panels` (all optional except ``images``/``recon``/``labels``): ``images``,
    ``recon`` (n, 3, H, W); ``labels`` (n, H, W); ``masks_decoder``, ``masks_attention``
    (n, k, H, W); ``per_slot`` (n, k, 3, H, W); ``alpha`` (n, k, 1, H, W); ``pi`` (m, k);
    ``samples`` (s, 3, H, W).
    """
    from probslot.metrics import masks_to_labels

    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    if "images" in panels:
        n = panels["images"].shape[0]
        num_objects = int(panels["labels"].max().item())
        rows = [
            ("input", [_img(x) for x in panels["images"]]),
            ("recon", [_img(x) for x in panels["recon"]]),
            ("ground truth", list(label_colours(panels["labels"], max(num_objects, 1)))),
        ]
        for source in ("decoder", "attention"):
            key = f"masks_{source}"
            if key in panels:
                k = panels[key].shape[1]
                pred = masks_to_labels(panels[key]) + 1  # slot j → colour j + 1
                rows.append((f"{source} masks", list(label_colours(pred, k))))
        written["reconstructions"] = save_figure(
            _grid(rows, f"reconstructions and masks ({n} images)"),
            out_dir / "reconstructions.png",
        )
        if "per_slot" in panels and "alpha" in panels:
            decomposition = panels["per_slot"] * panels["alpha"]  # (n, k, 3, H, W)
            what = "alpha · per-slot RGB (decoder)"
        else:
            att = panels["masks_attention"][:, :, None]  # (n, k, 1, H, W)
            decomposition = att * panels["images"][:, None]
            what = "attention mask · input (non-additive decoder)"
        k = decomposition.shape[1]
        rows = [("input", [_img(x) for x in panels["images"]])]
        rows += [(f"slot {j}", [_img(x) for x in decomposition[:, j]]) for j in range(k)]
        written["slots"] = save_figure(
            _grid(rows, f"per-slot decomposition: {what}"), out_dir / "slots.png"
        )
    if "samples" in panels:
        s = panels["samples"]
        per_row = min(8, s.shape[0])
        rows = [
            (f"row {r}", [_img(x) for x in s[r * per_row : (r + 1) * per_row]])
            for r in range(math.ceil(s.shape[0] / per_row))
        ]
        written["samples"] = save_figure(
            _grid(rows, "scenes decoded from slots sampled from the aggregate posterior q(z)"),
            out_dir / "samples.png",
        )
    if "pi" in panels:
        pi = panels["pi"].float()
        fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
        axes[0].hist(pi.flatten().numpy(), bins=40, color="tab:blue")
        axes[0].set_xlabel("π_k")
        axes[0].set_ylabel("slots")
        axes[0].set_title("mixing weights π (all slots)")
        sorted_pi = pi.sort(-1, descending=True)[0].mean(0).numpy()
        axes[1].bar(np.arange(len(sorted_pi)), sorted_pi, color="tab:orange")
        axes[1].set_xlabel("slot rank")
        axes[1].set_title("mean π, slots sorted per image")
        written["pi"] = save_figure(fig, out_dir / "pi.png")
    return written


# --------------------------------------------------------------------------- training curves
def read_csv_logs(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} from every ``logs/csv/**/metrics.csv`` of a run (Lightning
    CSVLogger layout; empty cells skipped). Empty when there are no CSV logs."""
    series: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(run_dir, "logs").glob("csv/**/metrics.csv")):
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    step = int(float(row.get("step") or 0))
                except ValueError:
                    continue
                for key, value in row.items():
                    if key in ("epoch", "step") or value in (None, ""):
                        continue
                    try:
                        series.setdefault(key, []).append((step, float(value)))
                    except ValueError:
                        continue
    return series


def plot_training_curves(series: Mapping[str, list[tuple[int, float]]], title: str) -> Any:
    """One panel per metric group (loss, mse, fg_ari, lr, ...) against step."""
    groups: dict[str, list[str]] = {}
    for key in sorted(series):
        base = key.split("/")[-1]
        if base in ("minutes", "skipped_updates"):
            continue
        group = "fg_ari" if base.startswith("fg_ari") else base
        groups.setdefault(group, []).append(key)
    names = list(groups)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for key in groups[name]:
            steps, values = zip(*series[key], strict=True)
            ax.plot(steps, values, label=key, marker="." if len(steps) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        values = [v for key in groups[name] for _, v in series[key]]
        if min(values) > 0 and max(values) / min(values) > 20:  # log only when it spans decades
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- comparison
def plot_heatmaps(
    matrices: Mapping[str, Sequence[Sequence[float | None]]], labels: Sequence[str], title: str
) -> Any:
    """Side-by-side annotated heatmaps of (r, r) matrices (None cells shown blank)."""
    fig, axes = plt.subplots(
        1, len(matrices), figsize=(3.6 * len(matrices) + 0.6, 3.4), squeeze=False
    )
    for ax, (name, mat) in zip(axes[0], matrices.items(), strict=True):
        arr = np.array([[np.nan if v is None else v for v in row] for row in mat], dtype=float)
        im = ax.imshow(arr, cmap="viridis")
        r = len(labels)
        ax.set_xticks(range(r), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(r), labels, fontsize=7)
        for i in range(r):
            for j in range(r):
                if np.isfinite(arr[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{arr[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if arr[i, j] < np.nanmean(arr) else "black",
                    )
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
