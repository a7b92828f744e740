"""Figures from saved results (matplotlib, Agg backend): training panels, evaluation panels,
training curves, comparison heatmaps. Nothing here touches a live trainer.

Every ``make_*`` function returns a matplotlib ``Figure`` (titled, every row and axis labelled),
so tests can read its titles and labels; every ``write_*`` function saves figures atomically and
returns the paths it wrote.

**Colours that mean something.** In the evaluation panels a slot's colour is the colour of the
ground-truth object it matches: per image, a rectangular Hungarian assignment
(`scipy.optimize.linear_sum_assignment`) maximises the summed IoU between the binary object
masks and the soft slot masks, as `probslot evaluate` matches objects to slots for the
identifiability scores; ground-truth object j and its matched slot share colour
`object_colour(j)`. Of the slots left over, the one that overlaps the background most is the
*background slot* (grey, marked "bg"); any other slot is *unmatched* (white). In training panels
there is no ground truth, so slot j always has colour j.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from torch import Tensor  # noqa: E402

from probslot.atomic import atomic_write_bytes  # noqa: E402

__all__ = [
    "BACKGROUND_COLOUR",
    "UNMATCHED_COLOUR",
    "SlotColours",
    "figure_png",
    "label_colours",
    "make_reconstruction_figure",
    "make_samples_figure",
    "make_slots_figure",
    "make_training_panel",
    "match_slot_colours",
    "object_colour",
    "overlay_masks",
    "plot_heatmaps",
    "plot_training_curves",
    "read_csv_logs",
    "save_figure",
    "wall_clock_minutes",
    "write_eval_panels",
    "write_training_panel",
]

#: object colours: tab10 without its grey (grey is the background's)
_OBJECT_PALETTE = np.array([plt.get_cmap("tab10")(i)[:3] for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)])
BACKGROUND_COLOUR = np.array([0.3, 0.3, 0.3])
UNMATCHED_COLOUR = np.array([1.0, 1.0, 1.0])
_CELL = 1.3  # inches per image cell


def object_colour(label: int) -> np.ndarray:
    """RGB of ground-truth label `label` (0 = background, grey; j ≥ 1 = object j)."""
    if label <= 0:
        return BACKGROUND_COLOUR
    return _OBJECT_PALETTE[(label - 1) % len(_OBJECT_PALETTE)]


def slot_colour(index: int) -> np.ndarray:
    """RGB of slot `index` where no ground truth is known (training panels)."""
    return _OBJECT_PALETTE[index % len(_OBJECT_PALETTE)]


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards; it can still be inspected)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig: Any, path: Path) -> Path:
    return atomic_write_bytes(path, figure_png(fig))


def label_colours(labels: Tensor, num: int) -> np.ndarray:
    """(b, H, W) integer labels → (b, H, W, 3) RGB, label j in `object_colour(j)`."""
    palette = np.stack([object_colour(j) for j in range(max(num, 1) + 1)])
    return palette[labels.clamp(0, max(num, 1)).cpu().numpy()]


def _img(x: Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] → (H, W, 3) numpy."""
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


# --------------------------------------------------------------------------- colour matching
@dataclass(frozen=True)
class SlotColours:
    """The colours of one image's slots, matched to its ground-truth objects.

    Attributes:
        assignment: (k,) int, per slot: the ground-truth label j ≥ 1 of the object it matches,
            0 for the background slot, −1 for an unmatched slot.
        colours: (k, 3) RGB per slot (`object_colour` of its object, grey, or white).
        iou: (k,) IoU of each slot with what it matched (NaN when unmatched).
    """

    assignment: np.ndarray
    colours: np.ndarray
    iou: np.ndarray

    @property
    def background_slot(self) -> int | None:
        hits = np.flatnonzero(self.assignment == 0)
        return int(hits[0]) if hits.size else None

    def slot_names(self) -> list[str]:
        """ "obj j", "bg" or "–" per slot."""
        return [
            f"obj {a}" if a > 0 else ("bg" if a == 0 else "–") for a in self.assignment.tolist()
        ]


def match_slot_colours(labels: Tensor, masks: Tensor) -> SlotColours:
    """Match slots to ground-truth objects by mask IoU (Hungarian) and colour them accordingly.

    Args:
        labels: (H, W) int ground-truth labels (0 = background, j ≥ 1 = object j).
        masks: (k, H, W) soft slot masks (decoder alpha or attention), summing to 1 over k.

    Objects are matched first (as `probslot evaluate` does for identifiability), each to a
    distinct slot while slots last; of the remaining slots the one with the largest IoU with the
    background becomes the background slot.
    """
    from scipy.optimize import linear_sum_assignment

    if labels.ndim != 2 or masks.ndim != 3 or masks.shape[1:] != labels.shape:
        raise ValueError(
            "labels must be (H, W) and masks (k, H, W) of the same size; got "
            f"{tuple(labels.shape)} and {tuple(masks.shape)}"
        )
    k = masks.shape[0]
    soft = masks.detach().double().flatten(1).cpu().numpy()  # (k, HW)
    flat = labels.detach().flatten().cpu().numpy()
    objects = [int(j) for j in np.unique(flat) if j > 0]

    def iou(region: np.ndarray) -> np.ndarray:  # (k,) soft IoU of each slot with a binary region
        inter = soft @ region
        union = region.sum() + soft.sum(1) - inter
        return inter / np.maximum(union, 1e-12)

    assignment = np.full(k, -1)
    matched_iou = np.full(k, np.nan)
    if objects:
        table = np.stack([iou((flat == j).astype(float)) for j in objects])  # (objects, k)
        rows, cols = linear_sum_assignment(table, maximize=True)
        for r, c in zip(rows, cols, strict=True):
            assignment[c], matched_iou[c] = objects[r], table[r, c]
    free = np.flatnonzero(assignment < 0)
    background = flat == 0
    if free.size and background.any():
        bg_iou = iou(background.astype(float))
        best = free[np.argmax(bg_iou[free])]
        assignment[best], matched_iou[best] = 0, bg_iou[best]
    colours = np.stack(
        [UNMATCHED_COLOUR if a < 0 else object_colour(int(a)) for a in assignment.tolist()]
    )
    return SlotColours(assignment=assignment, colours=colours, iou=matched_iou)


def _upscale(x: np.ndarray, scale: int) -> np.ndarray:
    return x.repeat(scale, axis=0).repeat(scale, axis=1)


def overlay_masks(
    image: Tensor, masks: Tensor, colours: np.ndarray, alpha: float = 0.6, scale: int = 4
) -> np.ndarray:
    """(H·s, W·s, 3) each pixel in the colour of its slot (argmax of `masks`), brightened by the
    input (a share `alpha` of the brightness follows the input's HSV value), with white
    boundaries between slots.

    Args:
        image: (3, H, W) in [0, 1]; masks: (k, H, W); colours: (k, 3) RGB per slot.
    """
    seg = _upscale(masks.detach().float().argmax(0).cpu().numpy(), scale)  # (H s, W s)
    # the slot's colour, as bright as the input pixel (HSV value): objects stand out in their
    # slot's colour, the dark background in a dim shade of its slot's
    value = _upscale(_img(image).max(-1, keepdims=True), scale)
    out = colours[seg] * ((1 - alpha) + alpha * value)
    edge = np.zeros(seg.shape, dtype=bool)
    edge[:-1] |= seg[:-1] != seg[1:]
    edge[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    out[edge] = 1.0
    return np.clip(out, 0.0, 1.0)


# --------------------------------------------------------------------------- grids of images
#: a cell is an image, a function that draws into its axes, or None (blank)
Cell = np.ndarray | Callable[[Any], None] | None


@dataclass
class _Row:
    label: str
    cells: Sequence[Cell]
    titles: Sequence[str] | None = None
    frames: Sequence[np.ndarray | None] | None = None
    label_colour: Any = "black"


def _grid(
    rows: Sequence[_Row],
    title: str,
    column_titles: Sequence[str] | None = None,
    legend: Sequence[Patch] | None = None,
) -> Figure:
    """A labelled grid: one row per `_Row` (its label on the left), gaps between cells."""
    cols = max(len(r.cells) for r in rows)
    has_titles = any(r.titles for r in rows) or column_titles is not None
    width = _CELL * cols + 0.6
    head = 0.37 + 0.18 * (title.count("\n") + 1)  # inches above the grid: the title's lines
    height = (_CELL + (0.3 if has_titles else 0.1)) * len(rows) + 0.25 + head
    fig, axes = plt.subplots(
        len(rows),
        cols,
        figsize=(width, height),
        squeeze=False,
        gridspec_kw={"wspace": 0.08, "hspace": 0.35 if has_titles else 0.12},
    )
    drawn = any(callable(c) for r in rows for c in r.cells)  # bar cells have tick labels below
    fig.subplots_adjust(
        left=0.5 / width,
        right=1 - 0.1 / width,
        top=1 - head / height,
        bottom=(0.45 if drawn else 0.1) / height,
    )
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = row.cells[c] if c < len(row.cells) else None
            if cell is None:
                ax.axis("off")
            elif callable(cell):
                cell(ax)
            else:
                ax.imshow(cell, interpolation="nearest")
            cell_title = None
            if row.titles is not None and c < len(row.titles):
                cell_title = row.titles[c]
            elif r == 0 and column_titles is not None and c < len(column_titles):
                cell_title = column_titles[c]
            if cell_title:
                ax.set_title(cell_title, fontsize=7, pad=2)
            if row.frames is not None and c < len(row.frames) and row.frames[c] is not None:
                for spine in ax.spines.values():
                    spine.set_edgecolor(row.frames[c])
                    spine.set_linewidth(2.5)
            if c == 0:
                ax.set_ylabel(row.label, fontsize=8, color=row.label_colour, fontweight="bold")
    fig.suptitle(title, fontsize=10, y=1 - 0.15 / height)
    if legend:
        fig.legend(
            handles=list(legend),
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(4, len(legend)),
            fontsize=7,
            frameon=False,
        )
    return fig


def _pi_bars(
    pi: np.ndarray, colours: np.ndarray, names: Sequence[str], first: bool = False
) -> Callable[[Any], None]:
    """A cell drawing one image's π as bars coloured by the slots' matched colours."""

    def draw(ax: Any) -> None:
        k = len(pi)
        ax.bar(np.arange(k), pi, color=colours, edgecolor="black", linewidth=0.5)
        ax.set_ylim(0, 1)
        ax.set_xticks(np.arange(k), names, fontsize=5.5, rotation=90)
        ax.set_yticks([0, 0.5, 1], ["0", ".5", "1"] if first else [], fontsize=5.5)
        for j, v in enumerate(pi):
            ax.text(j, min(v + 0.03, 0.9), f"{v:.2f}", ha="center", va="bottom", fontsize=5)

    return draw


def _colour_legend() -> list[Patch]:
    return [
        Patch(facecolor=object_colour(1), label="object j and the slot matched to it (IoU)"),
        Patch(facecolor=BACKGROUND_COLOUR, label="background / background slot (bg)"),
        Patch(facecolor=UNMATCHED_COLOUR, edgecolor="black", label="unmatched slot (–)"),
    ]


# --------------------------------------------------------------------------- training panels
def make_training_panel(
    images: Tensor,
    recon: Tensor,
    masks: Tensor,
    per_slot: Tensor | None = None,
    pi: Tensor | None = None,
    step: int | None = None,
) -> Figure:
    """The training panel: one column per image; rows input, reconstruction, masks, each slot.

    Args:
        images, recon: (b, 3, H, W) in [0, 1].
        masks: (b, k, H, W) decoder alpha masks (or the grouping attention, non-additive).
        per_slot: (b, k, 3, H, W) per-slot RGB (additive decoders): slot rows show RGB × mask;
            None: slot rows show the mask in grey.
        pi: (b, k) mixing weights (PSA), written above each slot's cell.
        step: the optimiser step, in the title.
    """
    b, k = masks.shape[:2]
    masks = masks.detach().float().cpu()
    seg_colours = np.stack([slot_colour(j) for j in range(k)])
    rows = [
        _Row("input", [_img(x) for x in images[:b]]),
        _Row("reconstruction", [_img(x) for x in recon[:b]]),
        _Row(
            "masks (argmax)",
            [
                overlay_masks(images[i], masks[i], seg_colours, alpha=0.35, scale=2)
                for i in range(b)
            ],
        ),
    ]
    for j in range(k):
        if per_slot is not None:
            cells = [_img(per_slot[i, j].float().cpu() * masks[i, j]) for i in range(b)]
        else:
            cells = [np.repeat(masks[i, j].numpy()[..., None], 3, -1) for i in range(b)]
        titles = [f"π {float(pi[i, j]):.2f}" for i in range(b)] if pi is not None else None
        rows.append(_Row(f"slot {j + 1}", cells, titles=titles, label_colour=slot_colour(j)))
    what = "RGB × mask" if per_slot is not None else "attention mask"
    when = f"step {step}" if step is not None else "training panel"
    return _grid(
        rows,
        f"{when} · {b} validation images (EMA weights)\nslot rows: {what}; "
        "row-label colour = the slot's mask colour",
        column_titles=[f"image {i + 1}" for i in range(b)],
    )


def write_training_panel(images: Tensor, out: Any, step: int, path: Path) -> Path:
    """Draw `make_training_panel` from an `AutoencoderOutput` and write it to `path`."""
    b = images.shape[0]
    masks = out.masks[:, :, 0] if out.masks is not None else out.attn_masks
    pi = getattr(out.grouping, "pi", None)
    recon = out.recon.detach().float().cpu()
    if recon.ndim == 3:  # a feature model's tokens (b, n, D): their principal components
        from probslot.models.features import tokens_picture

        recon = tokens_picture(recon, images.shape[-2:])
    fig = make_training_panel(
        images.detach().cpu(),
        recon.clamp(0, 1),
        masks.detach().float().cpu(),
        per_slot=None if out.per_slot is None else out.per_slot.detach().float().cpu().clamp(0, 1),
        pi=None if pi is None else pi.detach().float().cpu()[:b],
        step=step,
    )
    return save_figure(fig, Path(path))


# --------------------------------------------------------------------------- evaluation panels
def _sources(panels: Mapping[str, Tensor]) -> list[str]:
    return [s for s in ("decoder", "attention") if f"masks_{s}" in panels]


def make_reconstruction_figure(panels: Mapping[str, Tensor]) -> Figure:
    """Input, reconstruction, ground truth, then each mask source overlaid on the input with
    colours matched to the ground-truth objects (per-image FG-ARI above each), then π per slot.

    `panels` as in `write_eval_panels`; ``pi`` (m, k) holds the panel images first.
    """
    from probslot.metrics import fg_ari, masks_to_labels

    images, labels = panels["images"], panels["labels"]
    n = images.shape[0]
    rows = [
        _Row("input", [_img(x) for x in images]),
        _Row("reconstruction", [_img(x) for x in panels["recon"]]),
        _Row(
            "ground truth",
            [_upscale(label_colours(labels[i : i + 1], int(labels.max()))[0], 4) for i in range(n)],
        ),
    ]
    matched: dict[str, list[SlotColours]] = {}
    for source in _sources(panels):
        masks = panels[f"masks_{source}"]
        matched[source] = [match_slot_colours(labels[i], masks[i]) for i in range(n)]
        scores = fg_ari(masks_to_labels(masks), labels).tolist()
        rows.append(
            _Row(
                f"{source} masks",
                [overlay_masks(images[i], masks[i], matched[source][i].colours) for i in range(n)],
                titles=[
                    "FG-ARI –" if math.isnan(s) else f"FG-ARI {s:.2f}" for s in scores
                ],  # NaN: no foreground
            )
        )
    if "pi" in panels and matched:
        source = _sources(panels)[0]
        pi = panels["pi"][:n].float().cpu().numpy()
        rows.append(
            _Row(
                "π per slot",
                [
                    _pi_bars(
                        pi[i], matched[source][i].colours, matched[source][i].slot_names(), i == 0
                    )
                    for i in range(n)
                ],
            )
        )
    return _grid(
        rows,
        f"reconstructions and masks ({n} images): slot colours matched to the ground-truth "
        "objects (Hungarian on mask IoU)",
        legend=_colour_legend(),
    )


def make_slots_figure(panels: Mapping[str, Tensor]) -> Figure:
    """The per-slot decomposition: one row per slot; each cell framed in its matched colour and
    titled with the slot's π and what it matched ("obj j", "bg", "–")."""
    images, labels = panels["images"], panels["labels"]
    n = images.shape[0]
    sources = _sources(panels)
    if "per_slot" in panels and "alpha" in panels:
        decomposition = panels["per_slot"] * panels["alpha"]  # (n, k, 3, H, W)
        what = "alpha · per-slot RGB (decoder)"
    else:
        att = panels["masks_attention"][:, :, None]  # (n, k, 1, H, W)
        decomposition = att * images[:, None]
        what = "attention mask · input (non-additive decoder)"
    k = decomposition.shape[1]
    matched = (
        [match_slot_colours(labels[i], panels[f"masks_{sources[0]}"][i]) for i in range(n)]
        if sources
        else None
    )
    pi = panels["pi"][:n].float().cpu().numpy() if "pi" in panels else None
    rows = [_Row("input", [_img(x) for x in images])]
    for j in range(k):
        titles = []
        for i in range(n):
            parts = []
            if pi is not None:
                parts.append(f"π {pi[i, j]:.2f}")
            if matched is not None:
                parts.append(matched[i].slot_names()[j])
            titles.append(" · ".join(parts))
        frames = [m.colours[j] for m in matched] if matched is not None else None
        rows.append(_Row(f"slot {j + 1}", [_img(x) for x in decomposition[:, j]], titles, frames))
    return _grid(
        rows,
        f"per-slot decomposition: {what}; frame = matched ground-truth object",
        legend=_colour_legend(),
    )


def make_samples_figure(samples: Tensor, per_row: int = 8) -> Figure:
    """Scenes decoded from slots sampled from the aggregate posterior, in a labelled grid."""
    s = samples.shape[0]
    per_row = min(per_row, s)
    rows = [
        _Row(
            f"scenes {r * per_row + 1}–{min(s, (r + 1) * per_row)}",
            [_img(x) for x in samples[r * per_row : (r + 1) * per_row]],
        )
        for r in range(math.ceil(s / per_row))
    ]
    return _grid(
        rows,
        f"{s} scenes decoded from slots drawn i.i.d. from the aggregate posterior q(z)",
    )


def make_pi_figure(pi: Tensor) -> Figure:
    """Histogram of all π_k and the mean of each image's sorted π."""
    pi = pi.float()
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    axes[0].hist(pi.flatten().numpy(), bins=40, color="tab:blue")
    axes[0].set_xlabel("π_k")
    axes[0].set_ylabel("slots")
    axes[0].set_title("mixing weights π (all slots)")
    sorted_pi = pi.sort(-1, descending=True)[0].mean(0).numpy()
    axes[1].bar(np.arange(1, len(sorted_pi) + 1), sorted_pi, color="tab:orange")
    axes[1].set_xlabel("slot rank (largest π first)")
    axes[1].set_ylabel("mean π")
    axes[1].set_title("mean π, slots sorted per image")
    fig.suptitle(f"mixing weights π of {pi.shape[0]} images", fontsize=10)
    fig.tight_layout()
    return fig


def write_eval_panels(panels: Mapping[str, Tensor], out_dir: Path) -> dict[str, Path]:
    """Write the panels of `probslot evaluate` into `out_dir`.

    Keys of `panels` (all optional except ``images``/``recon``/``labels``): ``images``,
    ``recon`` (n, 3, H, W); ``labels`` (n, H, W); ``masks_decoder``, ``masks_attention``
    (n, k, H, W); ``per_slot`` (n, k, 3, H, W); ``alpha`` (n, k, 1, H, W); ``pi`` (m, k), the
    n panel images first; ``samples`` (s, 3, H, W).
    """
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    if "images" in panels:
        written["reconstructions"] = save_figure(
            make_reconstruction_figure(panels), out_dir / "reconstructions.png"
        )
        written["slots"] = save_figure(make_slots_figure(panels), out_dir / "slots.png")
    if "samples" in panels:
        written["samples"] = save_figure(
            make_samples_figure(panels["samples"]), out_dir / "samples.png"
        )
    if "pi" in panels:
        written["pi"] = save_figure(make_pi_figure(panels["pi"]), out_dir / "pi.png")
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


def wall_clock_minutes(
    series: Mapping[str, list[tuple[int, float]]],
) -> Callable[[Sequence[int]], np.ndarray] | None:
    """Step → wall-clock minutes since training began, from the logged ``val/minutes``.

    ``val/minutes`` counts from the start of each training session, so a resumed run starts
    again from 0: sessions are chained (each restart adds the time reached before it). Steps
    between validations are interpolated linearly; steps before the first and after the last are
    extrapolated at the mean rate. None when the run logged no wall-clock time.
    """
    points = sorted(series.get("val/minutes", []))
    if not points:
        return None
    steps, minutes, offset, last = [], [], 0.0, 0.0
    for step, value in points:
        if value < last:  # a new session: its clock restarted
            offset += last
        last = value
        steps.append(step)
        minutes.append(offset + value)
    xs, ys = np.array(steps, dtype=float), np.array(minutes, dtype=float)
    rate = ys[-1] / max(xs[-1], 1.0)  # minutes per step, over the whole run

    def to_minutes(query: Sequence[int]) -> np.ndarray:
        q = np.asarray(query, dtype=float)
        out = np.interp(q, xs, ys)
        out = np.where(q > xs[-1], ys[-1] + (q - xs[-1]) * rate, out)
        return np.where(q < xs[0], q * rate, out)

    return to_minutes


_CURVE_NAMES = {
    "loss": "training loss",
    "mse": "reconstruction MSE",
    "nll": "negative log-likelihood",
    "fg_ari": "FG-ARI",
    "lr": "learning rate",
    "grad_norm": "gradient norm",
}


def plot_training_curves(
    series: Mapping[str, list[tuple[int, float]]], title: str, x: str = "step"
) -> Figure:
    """One panel per metric group (loss, mse, fg_ari, lr, ...) against the optimiser step
    (``x="step"``) or wall-clock minutes (``x="minutes"``, see `wall_clock_minutes`)."""
    if x not in ("step", "minutes"):
        raise ValueError(f"x must be 'step' or 'minutes'; got {x!r}")
    to_minutes = wall_clock_minutes(series) if x == "minutes" else None
    if x == "minutes" and to_minutes is None:
        raise ValueError("the logs hold no val/minutes, so there is no wall-clock axis")
    groups: dict[str, list[str]] = {}
    for key in sorted(series):
        base = key.split("/")[-1]
        if base in ("minutes", "skipped_updates", "nonfinite_steps"):  # counters, not curves
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
            xs = to_minutes(steps) if to_minutes is not None else steps
            label = key.replace("fg_ari_attn", "fg_ari (attention)")
            ax.plot(xs, values, label=label, marker="." if len(steps) < 30 else None)
        ax.set_title(_CURVE_NAMES.get(name, name.replace("_", " ")))
        ax.set_xlabel("optimiser step" if x == "step" else "wall-clock minutes")
        ax.set_ylabel(name.replace("_", "-") if name == "fg_ari" else name.replace("_", " "))
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
def _cell_text(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 1e3 else f"{v:.1e}"


def plot_heatmaps(
    matrices: Mapping[str, Sequence[Sequence[float | None]]],
    labels: Sequence[str],
    title: str,
    titles: Mapping[str, str] | None = None,
) -> Figure:
    """Side-by-side annotated heatmaps of (r, r) matrices (None cells shown blank); `titles`
    maps a matrix's key to the title shown above it."""
    fig, axes = plt.subplots(
        1, len(matrices), figsize=(3.6 * len(matrices) + 0.6, 3.4), squeeze=False
    )
    for ax, (name, mat) in zip(axes[0], matrices.items(), strict=True):
        arr = np.array([[np.nan if v is None else v for v in row] for row in mat], dtype=float)
        im = ax.imshow(arr, cmap="viridis")
        r = len(labels)
        ax.set_xticks(range(r), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(r), labels, fontsize=7)
        middle = np.nanmean(arr) if np.isfinite(arr).any() else 0.0
        for i in range(r):
            for j in range(r):
                if np.isfinite(arr[i, j]):
                    ax.text(
                        j,
                        i,
                        _cell_text(arr[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if arr[i, j] < middle else "black",
                    )
        ax.set_title((titles or {}).get(name, name), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
