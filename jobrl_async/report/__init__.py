"""A run at a glance: one offline HTML page from the run's own log events.

    runlog.py    the log's lines -> RunLog (events joined over resumed runs); pure
    sections.py  RunLog -> the header's rows and the figures (plotly.js specs); pure
    page.py      RunLog -> the HTML page, plotly.js inlined
    keeper.py    ReportKeeper: the run keeps report.html fresh under its checkpoints URI
    curves.py    `bench learning`'s curves and the figures it prints; pure
    learning.py  `bench learning`'s page of those curves

`jobrl-async report` (commands/report.py) and the run share all of it.
"""

from .page import render_html
from .runlog import ReportError, RunLog, build_run_log, iter_lines, read_logs

__all__ = ["ReportError", "RunLog", "build_run_log", "iter_lines", "read_logs", "render_html"]
