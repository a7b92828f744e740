"""Reports from saved results: figures (`figures`), one self-contained HTML page (`html`) and a
Markdown summary (`markdown`). Reports read run directories, never a live trainer."""

from probslot.reports.html import build_report

__all__ = ["build_report"]
