"""The report as one self-contained HTML page: plotly.js, the figures and the header inlined.

It opens offline (nothing is fetched: no CDN, no fonts, no MathJax). Every text from the log is
escaped where it lands: HTML-escaped in the page, and the figures' JSON sits in a
`type="application/json"` script with `<`, `>`, `&` and U+2028/2029 as JSON escapes, so no log value
can end the script block or open a comment in it (`<!--<script>` would swallow the rest).
The page sets `data-plots-drawn` on <body> once plotly.js has drawn every figure.
"""

from __future__ import annotations

import datetime
import functools
import html
import importlib.resources
import re
from typing import Any

import orjson

from .. import __version__
from .runlog import RunLog
from .sections import Section, header_rows, sections

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 1.5rem; margin: 12px 0 4px; }
h2 { font-size: 1.15rem; margin: 0 0 4px; }
section, .header { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; padding: 14px 16px; margin: 14px 0; }
table { border-collapse: collapse; width: 100%; font-size: 0.92rem; }
td { padding: 3px 10px 3px 0; vertical-align: top; border-bottom: 1px solid #f0f0f0; }
td:first-child { color: #555; white-space: nowrap; width: 14em; }
.caption { color: #555; font-size: 0.9rem; margin: 0 0 6px; }
.notes { color: #8a5a00; font-size: 0.88rem; margin: 4px 0; padding-left: 18px; }
.empty { color: #777; font-style: italic; padding: 18px 0; }
.plot { width: 100%; }
footer { color: #777; font-size: 0.8rem; }
"""

DRAW = """
const figures = JSON.parse(document.getElementById("figures").textContent);
const config = JSON.parse(document.getElementById("plot-config").textContent);
Promise.all(Object.entries(figures).map(([id, fig]) => Plotly.newPlot(id, fig.data, fig.layout, config)))
  .then(() => document.body.setAttribute("data-plots-drawn", String(Object.keys(figures).length)));
"""


@functools.cache
def plotly_js() -> str:
    """plotly.js as the plotly package ships it (minified), safe to inline in a <script>."""
    js = importlib.resources.files("plotly").joinpath("package_data", "plotly.min.js").read_text("utf-8")
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.I)


def render_html(run: RunLog, title: str = "jobrl-async run report",
                now: datetime.datetime | None = None) -> str:
    parts = sections(run)
    now = now or datetime.datetime.now(datetime.UTC)
    return html_page(title, [header_table(header_rows(run)), *(section_html(s) for s in parts), _footer(run, now)],
                     parts)


def html_page(title: str, blocks: list[str], parts: list[Section]) -> str:
    """The page: a title, HTML blocks (escaped by their makers), the sections' figures drawn offline."""
    figures = {f"plot-{s.key}": s.figure for s in parts if s.figure is not None}
    body = "\n".join([f"<h1>{html.escape(title)}</h1>", *blocks])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
        f"<script id=\"figures\" type=\"application/json\">{_json(figures)}</script>\n"
        f"<script id=\"plot-config\" type=\"application/json\">{_json(PLOT_CONFIG)}</script>\n"
        f"<script>{plotly_js()}</script>\n<script>{DRAW}</script>\n</body>\n</html>\n"
    )


_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                               "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json(value: Any) -> str:
    # still JSON, and nothing in it the HTML parser of a script block reacts to
    return orjson.dumps(value).decode().translate(_JSON_ESCAPES)


def header_table(rows: list[tuple[str, str]]) -> str:
    cells = "\n".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<div class=\"header\"><table>\n{cells}\n</table></div>"


def section_html(s: Section) -> str:
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in s.notes)
    content = (f"<div class=\"plot\" id=\"plot-{html.escape(s.key)}\"></div>" if s.figure is not None
               else f"<p class=\"empty\">{html.escape(s.empty or 'No data in this log.')}</p>")
    return (f"<section id=\"{html.escape(s.key)}\">\n<h2>{html.escape(s.title)}</h2>\n"
            f"<p class=\"caption\">{html.escape(s.caption)}</p>\n"
            + (f"<ul class=\"notes\">{notes}</ul>\n" if notes else "") + f"{content}\n</section>")


def _footer(run: RunLog, now: datetime.datetime) -> str:
    sources = ", ".join(dict.fromkeys(s.source for s in run.segments)) or "no source"
    return (f"<footer>Made by jobrl-async {html.escape(__version__)} on {now:%Y-%m-%d %H:%M:%S} UTC from "
            f"{html.escape(sources)}: {run.events:,} log events ({run.other_events:,} not drawn here). "
            "Plots: plotly.js (MIT), inlined.</footer>")
