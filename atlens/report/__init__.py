"""Self-contained HTML reports of runs, and their tables as Markdown."""

from atlens.report.html import write_report
from atlens.report.tables import RunView, markdown_table, write_markdown

__all__ = ["RunView", "markdown_table", "write_markdown", "write_report"]
