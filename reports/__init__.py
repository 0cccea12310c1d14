"""The audit report: one self-contained HTML file rendered from ``results.json`` (no torch needed)."""

from .html import render_report, write_report

__all__ = ["render_report", "write_report"]
