"""The Markdown summary written next to the HTML report (``report.md``): the same readable tables
(`probslot.reports.tables`) and links to the figures (relative paths), for pasting into issues,
READMEs and papers' supplements."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probslot.reports.tables import (
    Table,
    compare_tables,
    evaluation_tables,
    final_validation_table,
    pruning_tables,
)

__all__ = ["markdown_table", "render_markdown"]


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(table: Table) -> list[str]:
    """The lines of `table` in Markdown: its title in bold, the header, the rows, a blank line."""
    lines = [
        f"**{table.title}**",
        "",
        "| " + " | ".join(_cell(h) for h in table.header) + " |",
        "|" + "---|" * len(table.header),
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return [*lines, ""]


def render_markdown(runs: Sequence[Any], compare: dict[str, Any] | None, base: Path) -> str:
    """Markdown text for `runs` (`RunInputs`) and an optional compare.json dict; figure links are
    relative to `base` (the report's directory)."""
    lines = ["# probslot report", ""]
    for inp in runs:
        name = inp.root.name
        lines += [f"## Run `{name}`", "", f"Run directory: `{inp.root}`", ""]
        if inp.metrics:
            lines += markdown_table(final_validation_table(inp.metrics))
        ev = inp.eval
        if ev is None:
            lines += [f"Metrics: not computed: run `probslot evaluate --run_dir {inp.root}`", ""]
        else:
            lines += [f"Evaluation on {ev.get('num_images')} `{ev.get('split')}` images.", ""]
            for table in evaluation_tables(ev):
                lines += markdown_table(table)
            for note in ev.get("notes", []):
                lines.append(f"- {note}")
            if ev.get("notes"):
                lines.append("")
        if inp.pruning is None:
            lines += [f"Pruning: not computed: run `probslot prune --run_dir {inp.root}`.", ""]
        else:
            for table in pruning_tables(inp.pruning):
                lines += markdown_table(table)
        figures = dict(inp.figures)
        if inp.panels:
            figures["latest training panel"] = inp.panels[-1]
        for p in inp.pruning_pngs:
            figures[f"pruning {p.stem}"] = p
        for key, path in figures.items():
            lines.append(f"![{key}]({_rel(path, base)})")
        if figures:
            lines.append("")
    lines += ["## Cross-seed comparison", ""]
    if compare is None:
        lines.append("Not computed: run `probslot compare --run_dirs '[A, B]' --out DIR`.")
    else:
        lines += [
            f"{compare.get('num_images')} `{compare.get('split')}` images; {compare.get('pairs')}.",
            "",
        ]
        for warning in compare.get("warnings", []):
            lines += [f"> **warning:** {warning}", ""]
        for table in compare_tables(compare):
            lines += markdown_table(table)
    lines.append("")
    return "\n".join(lines)
