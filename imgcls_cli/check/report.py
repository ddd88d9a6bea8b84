"""report.html of a check (placeholder until the page is written)."""
from __future__ import annotations
def write_check_report_safely(*a, **k):
    return None
