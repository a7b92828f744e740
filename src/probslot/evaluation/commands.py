"""The typed functions behind ``probslot evaluate``, ``probslot compare`` and ``probslot report``
(registered in `probslot.cli.COMMANDS`; options and help come from these signatures)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["compare", "evaluate", "report"]


def evaluate(
    run_dir: str,
    split: str = "test",
    max_images: int | None = None,
    inception: str | None = None,
    batch_size: int = 32,
    contrast_images: int = 8,
    seed: int = 0,
    progress: bool = True,
    draw: int = 0,
    draws: int = 1,
    overrides: list[str] | None = None,
) -> Path:
    """Evaluate a trained run: every metric that applies, written to RUN/eval.json plus RUN/eval/*.png.

    Example: ``probslot evaluate --run_dir runs/demo --split test``.

    Args:
        run_dir: run directory written by `probslot train` or `probslot demo`.
        split: data split to evaluate: test, val or train.
        max_images: evaluate only the first N images of the split (default: all).
        inception: TorchScript Inception weights file for FID/KID (skipped when not given).
        batch_size: images per forward pass.
        contrast_images: images on which compositional contrast is computed (0 = skip).
        seed: seed of the identifiability split and of posterior sampling.
        progress: show a progress bar.
        draw: which fixed draw of PSA's random initial slots the figures use (inference is
            deterministic; another number is another draw).
        draws: also evaluate this many draws (draw, draw+1, ...) and report the mean ± std of
            FG-ARI, mBO, MSE and SMCC over them.
        overrides: data overrides such as data.num_test=1024 or
            data.dataset_kwargs.min_distance=0 (also as bare arguments; `probslot.runs`).
    """
    from probslot.evaluation.evaluate import EVAL_FILE, EvalConfig, evaluate_run

    cfg = EvalConfig(
        split=split,
        max_images=max_images,
        inception=inception,
        batch_size=batch_size,
        contrast_images=contrast_images,
        seed=seed,
        progress=progress,
        draw=draw,
        draws=draws,
        data_overrides=tuple(overrides or ()),
    )
    result = evaluate_run(run_dir, cfg)  # writes RUN/eval.json: result.save
    for line in result.summary_lines():
        print(line)
    for note in result.notes:
        print(f"note: {note}")
    out = Path(run_dir) / EVAL_FILE
    print(f"metrics written to {out}")
    if result.figures:  # a feature model writes no panels
        print(f"panels written to  {Path(run_dir) / 'eval'}/")
    return out


def compare(
    run_dirs: list[str],
    out: str = "runs/compare",
    split: str = "test",
    max_images: int | None = None,
    seed: int = 0,
    progress: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Cross-seed identifiability of runs of ONE configuration: SMCC, R² and posterior agreement for all pairs.

    Example: ``probslot compare --run_dirs '[runs/psa_s0, runs/psa_s1, runs/psa_s2]' --out runs/compare``.

    Args:
        run_dirs: two or more run directories trained from the same config with different seeds.
        out: directory for compare.json and compare.png.
        split: data split (of the first run's data config) encoded by every run.
        max_images: use only the first N images of the split (default: all).
        seed: seed of the identifiability split and of posterior sampling.
        progress: show a progress bar.
        overrides: data overrides such as data.num_test=1024 (also as bare arguments;
            `probslot.runs`).
    """
    from probslot.evaluation.compare import COMPARE_FILE, CompareConfig, compare_runs

    cfg = CompareConfig(
        split=split,
        max_images=max_images,
        seed=seed,
        progress=progress,
        data_overrides=tuple(overrides or ()),
    )
    result = compare_runs(run_dirs, out, cfg)  # writes OUT/compare.json: result.save
    for line in result.summary_lines():  # one pair: its value, no ±; degenerate KLs: warnings
        print(line)
    path = Path(out) / COMPARE_FILE
    print(f"comparison written to {path} and {Path(out) / result.figure}")
    return path


def report(run_dirs: list[str], out: str = "report.html", compare: str | None = None) -> Path:
    """One self-contained HTML report (and report.md) of runs: config, curves, panels, metrics, comparisons.

    Example: ``probslot report --run_dirs '[runs/demo]' --out runs/demo/report.html``.

    Args:
        run_dirs: one or more run directories.
        out: HTML file to write; the Markdown summary goes next to it (same name, .md).
        compare: compare.json (or its directory) written by `probslot compare`.
    """
    from probslot.reports.html import build_report

    html_path, md_path = build_report(run_dirs, out, compare=compare)
    print(f"report written to {html_path}")
    print(f"summary written to {md_path}")
    return html_path
