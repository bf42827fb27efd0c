"""Self-contained HTML reports of runs."""

from atlens.report.html import write_report

__all__ = ["write_report"]
