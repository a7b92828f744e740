"""The Markdown summary written next to the HTML report (``report.md``): metric tables and links
to the figures (relative paths), for pasting into issues, READMEs and papers' supplements."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["render_markdown"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "–" if v is None else str(v)


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def render_markdown(runs: Sequence[Any], compare: dict[str, Any] | None, base: Path) -> str:
    """Markdown text for `runs` (`RunInputs`) and an optional compare.json dict; figure links are
    relative to `base` (the report's directory)."""
    lines = ["# probslot report", ""]
    for inp in runs:
        name = inp.root.name
        lines += [f"## Run `{name}`", "", f"Run directory: `{inp.root}`", ""]
        if inp.metrics:
            lines += ["| final validation | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(inp.metrics.items())]
            lines.append("")
        ev = inp.eval
        if ev is None:
            lines += [f"Metrics: not computed: run `probslot evaluate --run_dir {inp.root}`", ""]
        else:
            lines += [f"Evaluation on {ev.get('num_images')} `{ev.get('split')}` images.", ""]
            seg = ev.get("segmentation", {})
            if seg:
                keys = sorted({k for v in seg.values() for k in v})
                lines += ["| masks | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
                for src, vals in seg.items():
                    lines.append(f"| {src} | " + " | ".join(_fmt(vals.get(k)) for k in keys) + " |")
                lines.append("")
            rows = []
            for k, v in (ev.get("reconstruction") or {}).items():
                rows.append((k, v))
            ident = ev.get("identifiability_gt") or {}
            for k in ("smcc", "smcc_adjusted", "r2_affine", "r2_krr", "num_objects"):
                if k in ident:
                    rows.append((f"ground truth {k}", ident[k]))
            cc = ev.get("compositional_contrast") or {}
            if cc:
                rows.append(("compositional contrast (mean)", cc.get("mean")))
            for k, v in (ev.get("generation") or {}).items():
                rows.append((k, v))
            sc = (ev.get("slot_counts") or {}).get("thresholds", {})
            for tau, vals in sc.items():
                rows.append((f"active slots ({tau})", vals.get("mean_active")))
            if rows:
                lines += ["| metric | value |", "|---|---|"]
                lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
                lines.append("")
            for note in ev.get("notes", []):
                lines.append(f"- {note}")
            if ev.get("notes"):
                lines.append("")
        for key, path in inp.figures.items():
            lines.append(f"![{key}]({_rel(path, base)})")
        if inp.figures:
            lines.append("")
        if inp.pruning is None:
            lines += [f"Pruning: not computed: run `probslot prune --run_dir {inp.root}`.", ""]
    lines += ["## Cross-seed comparison", ""]
    if compare is None:
        lines.append("Not computed: run `probslot compare --run_dirs '[A, B]' --out DIR`.")
    else:
        lines += [
            f"{compare.get('num_images')} `{compare.get('split')}` images; {compare.get('pairs')}.",
            "",
            "| metric | all pairs (mean ± std) | consecutive pairs (mean) |",
            "|---|---|---|",
        ]
        for key, s in compare.get("summary", {}).items():
            cons = compare.get("consecutive", {}).get(key, {})
            lines.append(
                f"| {key} | {_fmt(s.get('mean'))} ± {_fmt(s.get('std'))} | {_fmt(cons.get('mean'))} |"
            )
    lines.append("")
    return "\n".join(lines)
