"""The page of `bench learning`: validation score per step and per second, reward per step.

The run report's style and helpers (page.py, sections.py): one offline HTML page, plotly.js
inlined. Each schedule is a mean line over its seeds with a band of ± one standard deviation.
"""

from __future__ import annotations

import datetime
import html
from typing import Any

from .. import __version__
from ..config import Config
from .curves import BASELINE, MeanPoint, RunCurve, mean_curve, mean_rewards
from .page import header_table, html_page, section_html
from .sections import BASE_LAYOUT, GRID, Section

COLOURS = {"sequential": (31, 119, 180), "pipelined": (255, 127, 14), "pipelined-behaviour": (44, 160, 44),
           "pipelined-lag2": (148, 103, 189)}
OTHER = (127, 127, 127)


def render_learning_html(runs: dict[str, list[RunCurve]], summary: dict[str, Any], cfg: Config,
                         now: datetime.datetime | None = None, end_attempts: int = 1) -> str:
    """`end_attempts`: how many times the validation attempts the start's and final rounds drew."""
    now = now or datetime.datetime.now(datetime.UTC)
    parts = [per_step_section(runs), per_second_section(runs), reward_section(runs)]
    footer = (f"<footer>Made by jobrl-async {html.escape(__version__)} on {now:%Y-%m-%d %H:%M:%S} UTC by "
              "<code>bench learning</code>. Plots: plotly.js (MIT), inlined.</footer>")
    blocks = [header_table(header_rows(summary, cfg, end_attempts)), *(section_html(s) for s in parts), footer]
    return html_page("Does the overlap cost learning?", blocks, parts)


def header_rows(summary: dict[str, Any], cfg: Config, end_attempts: int = 1) -> list[tuple[str, str]]:
    g, t = cfg.generation, cfg.training
    rows = [
        ("runs", f"{summary['steps']} steps x {summary['seeds']} seeds per schedule, every run from the same LoRA weights"),
        ("model, judge", f"{cfg.model.name}, stub judge with {summary['judge_latency_ms']:g} ms a call"),
        ("batch", f"{t.batch_contexts} contexts x {t.attempts} attempts, {g.max_new_tokens} new tokens, "
                  f"learning rate {t.learning_rate:g}"),
        ("validation", f"{cfg.validation.max_contexts or 'all'} contexts x {cfg.validation.attempts} attempts every "
                       f"step; x {cfg.validation.attempts * end_attempts} attempts on the start's and the final weights"),
    ]
    ttt = summary.get("time_to_sequential_final_s", {})
    for schedule in ttt:
        f = summary[schedule]
        reached = ttt[schedule]
        text = (f"validation {_num(f['validation_first_mean'])} -> {_num(f['validation_final_mean'])} "
                f"(sd {_num(f['validation_final_sd'])}), reward of the last 5 steps {_num(f['reward_last5_mean'])}, "
                f"{_num(f['wall_s_mean'], 1)} s ({_num(f['s_per_step_mean'], 2)} s/step), sequential's final score "
                + (f"at {reached:.1f} s" if reached is not None else "not reached"))
        if schedule != BASELINE:
            text += (f"; speed-up {_num(f.get('speedup_wall'), 2)}x, "
                     f"final gap {_num(f.get('final_gap_in_sd'), 2)} pooled sd")
        rows.append((schedule, text))
    return rows


def per_step_section(runs: dict[str, list[RunCurve]]) -> Section:
    section = Section("per-step", "Validation score per step",
                      "Mean over seeds (band: ± one standard deviation) against the training steps learned "
                      "before the round sampled; the first and the last points are rounds on the start's and the final "
                      "weights, outside the timed run, with more attempts per context (see above). A pipelined "
                      "round may sample weights one step older than its x (the learner was still busy).")
    data = [trace for schedule, group in runs.items()
            for trace in _band_traces(schedule, [(p.steps_done, p) for p in mean_curve(group)])]
    section.figure = {"data": data, "layout": _layout("training steps done", "validation score")}
    return section


def per_second_section(runs: dict[str, list[RunCurve]]) -> Section:
    section = Section("per-second", "Validation score per wall-clock second",
                      "The same rounds against the seconds since the run started when each score was known "
                      "(mean over seeds); the dotted line is the sequential schedule's final score.")
    data = [trace for schedule, group in runs.items()
            for trace in _band_traces(schedule, [(round(p.t_s, 2), p) for p in mean_curve(group)])]
    layout = _layout("seconds", "validation score")
    if BASELINE in runs:
        target = mean_curve(runs[BASELINE])[-1].mean
        layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": target, "y1": target,
                             "line": {"dash": "dot", "color": _rgb(COLOURS[BASELINE]), "width": 1}}]
    section.figure = {"data": data, "layout": layout}
    return section


def reward_section(runs: dict[str, list[RunCurve]]) -> Section:
    section = Section("reward", "Training reward per step",
                      "Mean reward of each step's scored trajectories, averaged over seeds (band: ± one "
                      "standard deviation over seeds). A pipelined step learns from samples of an older policy.")
    data = []
    for schedule, group in runs.items():
        points = [(step, MeanPoint(step, 0.0, m, s, len(group))) for step, m, s in mean_rewards(group)]
        data += _band_traces(schedule, points)
    section.figure = {"data": data, "layout": _layout("step", "reward")}
    return section


def _band_traces(schedule: str, points: list[tuple[float, MeanPoint]]) -> list[dict[str, Any]]:
    colour = COLOURS.get(schedule, OTHER)
    xs = [x for x, _ in points]
    means = [p.mean for _, p in points]
    sds = [p.sd or 0.0 for _, p in points]
    edge = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "type": "scatter",
            "legendgroup": schedule, "showlegend": False}
    return [
        {**edge, "x": xs, "y": [m + s for m, s in zip(means, sds)]},
        {**edge, "x": xs, "y": [m - s for m, s in zip(means, sds)], "fill": "tonexty",
         "fillcolor": _rgb(colour, 0.16)},
        {"x": xs, "y": means, "mode": "lines+markers", "type": "scatter", "name": schedule,
         "legendgroup": schedule, "line": {"color": _rgb(colour)}, "customdata": sds,
         "hovertemplate": f"{schedule}: %{{y:.3f}} ± %{{customdata:.3f}}<extra></extra>"},
    ]


def _layout(x: str, y: str) -> dict[str, Any]:
    return {**BASE_LAYOUT, "xaxis": {"title": {"text": x}, **GRID}, "yaxis": {"title": {"text": y}, **GRID}}


def _rgb(c: tuple[int, int, int], alpha: float | None = None) -> str:
    return f"rgba({c[0]},{c[1]},{c[2]},{alpha})" if alpha is not None else f"rgb({c[0]},{c[1]},{c[2]})"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
