"""What the report shows, from a RunLog: the header's rows and one figure per section.

Pure: figures are plotly.js figure specs (plain dicts of `data` and `layout`), built here without
plotly's Python figure classes (their validation costs far more than the page needs, and the
in-run report builds these while the run trains). A section without data says why instead of
drawing an empty plot; a panel without data says so inside the figure.
"""

from __future__ import annotations

import datetime
import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .runlog import RunLog, Segment, parse_time

# One colour per thing, the same in every section.
COLOURS = {"reward": "#1f77b4", "validation": "#ff7f0e", "best": "#d62728", "generator": "#2ca02c",
           "learner": "#9467bd", "idle": "#c7c7c7", "judge": "#ff7f0e", "tokens": "#17becf",
           "quota": "#7f7f7f", "http_429": "#d62728", "failed": "#8c564b", "latest": "#1f77b4",
           "step_s": "#7f7f7f"}
PAUSE_COLOURS = ("rgba(214,39,40,0.15)", "rgba(148,103,189,0.18)", "rgba(255,127,14,0.18)",
                 "rgba(23,190,207,0.18)")
BASE_LAYOUT = {"margin": {"l": 64, "r": 64, "t": 40, "b": 48}, "height": 340,
               "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"}, "hovermode": "x unified",
               "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
               "plot_bgcolor": "#fff", "paper_bgcolor": "#fff"}
GRID = {"gridcolor": "#e5e5e5", "zerolinecolor": "#bbb"}


@dataclass
class Section:
    key: str
    title: str
    caption: str
    figure: dict[str, Any] | None = None
    empty: str | None = None  # why there is no figure
    notes: list[str] = field(default_factory=list)  # what is missing from the figure


def sections(run: RunLog) -> list[Section]:
    return [reward_section(run), judge_section(run), timeline_section(run), learner_section(run),
            checkpoints_section(run)]


# ---------------------------------------------------------------- header


def header_rows(run: RunLog) -> list[tuple[str, str]]:
    started = run.started
    steps = run.ordered_steps()
    best = best_validation(run)
    traj = trajectory_totals(run)
    judge = judge_totals(run)
    rows = [
        ("run start", _time(run.first_ts)),
        ("run end", _time(run.last_ts)),
        ("wall time", _duration(sum(s.wall_s for s in run.segments))
         + (f" in {len(run.segments)} runs (resumed)" if len(run.segments) > 1 else "")),
        ("steps", f"{len(steps)} (step {steps[0]['step']} to {steps[-1]['step']})" if steps else "none logged"),
        ("epochs", _epochs(steps, started)),
        ("best validation score", f"{best[1]:.4f} at step {best[0]}" if best else "no validation in this log"),
        ("trajectories", ", ".join(f"{n:,} {k}" for k, n in traj.items()) if traj else "not in this log"),
        ("judged training trajectories", _learning(run)),
        ("judge calls", f"{judge['calls']:,}" if judge and "calls" in judge else "not in this log"),
        ("judge tokens", f"{judge['tokens']:,}" if judge and "tokens" in judge else "not in this log"),
    ]
    if judge and ("http_429" in judge or "dedup_hits" in judge):
        rows.append(("judge 429s / dedup hits", f"{judge.get('http_429', 0):,} / {judge.get('dedup_hits', 0):,}"))
    if judge and (judge.get("reasoning_tokens") or judge.get("cached_tokens")):
        rows.append(("judge reasoning / cached tokens",
                     f"{judge.get('reasoning_tokens', 0):,} / {judge.get('cached_tokens', 0):,}"))
    if judge and "usd" in judge:
        rows.append(("judge cost", f"${judge['usd']:,.2f} at the configured prices"))
    rows += [
        ("config digest", _text(started.get("config_digest"))),
        ("model", _text(started.get("model"))),
        ("judge", _judge_setting(started)),
        ("judge quota", _quota(started)),
        ("schedule, max policy lag", f"{_text(started.get('schedule'))}, {_text(started.get('max_policy_lag'))}"),
        ("batch", _batch(started)),
        ("dataset", _text(started.get("dataset"))),
        ("checkpoints", _text(started.get("checkpoints"))),
        ("device", _text(started.get("device"))),
    ]
    if run.skipped_lines:
        rows.append(("lines skipped", f"{run.skipped_lines:,} (not JSON log events)"))
    return rows


def best_validation(run: RunLog) -> tuple[int, float] | None:
    """(step, score) of the best validation score; the earliest step on a tie, as `best` is kept."""
    scored = [(s["step"], s["validation_score"]) for s in run.ordered_steps() if _num(s.get("validation_score"))]
    if not scored:
        return None
    top = max(score for _, score in scored)
    return next((step, score) for step, score in scored if score == top)


def trajectory_totals(run: RunLog) -> dict[str, int]:
    """Trajectory outcomes over the run: each process's `run_summary`, or its steps' counts (training
    and validation) when it ended without one."""
    return _sum_dicts(_segment_counts(seg, "trajectories", ("trajectories", "validation_trajectories"))
                      for seg in run.segments)


def learning_totals(run: RunLog) -> dict[str, int]:
    """Judged training trajectories over the run, learned or left unlearned (each process's
    `run_summary`; a process that ended without one is not counted)."""
    return _sum_dicts(_counts(seg.summary.get("training_trajectories")) for seg in run.segments if seg.summary)


def _learning(run: RunLog) -> str:
    totals = learning_totals(run)
    if "judged" not in totals:
        return "not in this log"
    text = f"{totals['judged']:,}: {totals.get('learned', 0):,} learned"
    if totals.get("unlearned"):
        text += f", {totals['unlearned']:,} judged but not learned (stopped first)"
    return text


def judge_totals(run: RunLog) -> dict[str, int]:
    """Judge calls, tokens, 429s and dedup hits over the run (empty when the log has no judge counts)."""
    return _sum_dicts(_segment_counts(seg, "judge", ("judge",)) for seg in run.segments)


def _segment_counts(seg: Segment, summary_key: str, step_keys: tuple[str, ...]) -> dict[str, int]:
    if seg.summary and isinstance(seg.summary.get(summary_key), dict):
        return _counts(seg.summary[summary_key])
    return _sum_dicts(_counts(step.get(k)) for step in seg.steps for k in step_keys)


def _counts(value: Any) -> dict[str, Any]:
    """The numbers of a counts object (ints; dollars as finite floats)."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items()
            if (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v))}


def _sum_dicts(dicts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def _epochs(steps: list[dict[str, Any]], started: dict[str, Any]) -> str:
    epochs = [s["epoch"] for s in steps if _int(s.get("epoch"))]
    if not epochs:
        return "not in this log"
    # the log counts epochs from 0
    of = f" of {started['epochs']}" if _int(started.get("epochs")) else ""
    return f"{max(epochs) + 1}{of}"


def _judge_setting(started: dict[str, Any]) -> str:
    mode = _text(started.get("judge"))
    calls = started.get("judge_calls")
    return f"{mode}, calls {calls}" if calls else mode


def _quota(started: dict[str, Any]) -> str:
    rpm, tpm = started.get("judge_rpm"), started.get("judge_tpm")
    if not (_num(rpm) or _num(tpm)):
        return "not in this log"
    return f"{_fmt(rpm)} requests/min, {_fmt(tpm)} tokens/min"


def _batch(started: dict[str, Any]) -> str:
    contexts, attempts = started.get("batch_contexts"), started.get("attempts")
    if not (_int(contexts) and _int(attempts)):
        return "not in this log"
    return f"{contexts} contexts x {attempts} attempts"


# ---------------------------------------------------------------- reward and validation


def reward_section(run: RunLog) -> Section:
    section = Section("reward", "Reward and validation",
                      "Mean reward of each step's scored trajectories (band: ± one standard deviation) "
                      "and the validation score of each round, the best one marked.")
    steps = [s for s in run.ordered_steps() if _num(s.get("reward_mean"))]
    if not steps:
        section.empty = "No step with a reward in this log."
        return section
    xs = [s["step"] for s in steps]
    mean = [s["reward_mean"] for s in steps]
    std = [s["reward_std"] if _num(s.get("reward_std")) else 0.0 for s in steps]
    data: list[dict[str, Any]] = [
        {"x": xs, "y": [m + d for m, d in zip(mean, std)], "mode": "lines", "line": {"width": 0},
         "showlegend": False, "hoverinfo": "skip", "type": "scatter"},
        {"x": xs, "y": [m - d for m, d in zip(mean, std)], "mode": "lines", "line": {"width": 0},
         "fill": "tonexty", "fillcolor": "rgba(31,119,180,0.18)", "name": "± std", "hoverinfo": "skip",
         "type": "scatter"},
        {"x": xs, "y": mean, "mode": "lines+markers", "name": "reward mean", "type": "scatter",
         "line": {"color": COLOURS["reward"]}, "customdata": std,
         "hovertemplate": "%{y:.3f} ± %{customdata:.3f}"},
    ]
    validated = [s for s in run.ordered_steps() if _num(s.get("validation_score"))]
    if validated:
        data.append({"x": [s["step"] for s in validated], "y": [s["validation_score"] for s in validated],
                     "mode": "lines+markers", "name": "validation score", "type": "scatter",
                     "line": {"color": COLOURS["validation"]}, "hovertemplate": "%{y:.4f}"})
        best = best_validation(run)
        assert best is not None
        data.append({"x": [best[0]], "y": [best[1]], "mode": "markers", "type": "scatter",
                     "name": f"best: {best[1]:.4f} at step {best[0]}", "hovertemplate": "best %{y:.4f}",
                     "marker": {"symbol": "star", "size": 16, "color": COLOURS["best"]}})
    else:
        section.notes.append("No validation round in this log.")
    layout = _layout(xaxis=_step_axis(run), yaxis={"title": {"text": "reward"}, **GRID})
    _mark_resumes(run, layout)
    section.figure = {"data": data, "layout": layout}
    return section


def _mark_resumes(run: RunLog, layout: dict[str, Any]) -> None:
    """A dotted line where a resumed run took over (between its checkpoint's step and the next)."""
    for r in run.resumes:
        x = r["step"] + 0.5
        layout.setdefault("shapes", []).append(
            {"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
             "line": {"dash": "dot", "color": "#555", "width": 1}})
        layout.setdefault("annotations", []).append(
            {"x": x, "y": 1, "xref": "x", "yref": "paper", "text": "resumed", "showarrow": False,
             "yanchor": "bottom", "font": {"size": 10, "color": "#555"}})


# ---------------------------------------------------------------- judge


def judge_section(run: RunLog) -> Section:
    section = Section("judge", "Judge: rate against the quota",
                      "Judge calls and tokens per minute over each step, against the configured quota; "
                      "HTTP 429s and failed trajectories per step below; shaded: judge intake paused "
                      "by the breaker (per endpoint when there are several).")
    steps = [s for s in run.ordered_steps() if parse_time(s.get("timestamp"))]
    if not steps and not run.pauses:
        section.empty = "No step and no judge pause in this log."
        return section
    started = run.started
    times = [plot_time(parse_time(s["timestamp"])) for s in steps]
    data: list[dict[str, Any]] = []
    rpm = [s.get("judge_rpm") if _num(s.get("judge_rpm")) else None for s in steps]
    data.append(_line(times, rpm, "calls/min", COLOURS["judge"], "y"))
    judged = [s.get("judge") if isinstance(s.get("judge"), dict) else None for s in steps]
    if any(judged):
        tokens = [_per_minute(j, "tokens", s) for j, s in zip(judged, steps)]
        data.append(_line(times, tokens, "tokens/min", COLOURS["tokens"], "y3"))
        for key, label in (("reasoning_tokens", "reasoning tokens/min"), ("cached_tokens", "cached tokens/min")):
            if any(j and j.get(key) for j in judged):  # reasoning models, prompt caching: drawn when present
                rates = [_per_minute(j, key, s) for j, s in zip(judged, steps)]
                data.append({**_line(times, rates, label, COLOURS["tokens"], "y3"),
                             "line": {"color": COLOURS["tokens"], "dash": "dot" if key == "cached_tokens" else "dash"}})
        data += _endpoint_rates(times, judged, steps)
        data.append(_bars(times, [(j or {}).get("http_429") for j in judged], "HTTP 429s", COLOURS["http_429"], "y2"))
    else:
        section.notes.append("This log's step events carry no judge counts (tokens, 429s): only calls/min is drawn.")
    failed = [_failed(s) for s in steps]
    data.append(_bars(times, failed, "judge_failed trajectories", COLOURS["failed"], "y2"))
    if times:
        span = [times[0], times[-1]]
        for key, axis, label in (("judge_rpm", "y", "RPM quota"), ("judge_tpm", "y3", "TPM quota")):
            if _num(started.get(key)) and (axis == "y" or any(judged)):
                data.append({"x": span, "y": [started[key]] * 2, "mode": "lines", "name": label, "type": "scatter",
                             "yaxis": axis, "line": {"dash": "dash", "color": COLOURS["quota"]}})
        if not _num(started.get("judge_rpm")):
            section.notes.append("The configured quota is not in this log's run_started event.")
    layout = _layout(
        height=420, barmode="group",
        xaxis={"type": "date", "title": {"text": "time (UTC)"}, **GRID, "anchor": "y2"},
        yaxis={"title": {"text": "calls/min"}, "domain": [0.4, 1.0], "rangemode": "tozero", **GRID},
        yaxis2={"title": {"text": "per step"}, "domain": [0.0, 0.28], "rangemode": "tozero", **GRID},
        yaxis3={"title": {"text": "tokens/min"}, "overlaying": "y", "side": "right", "rangemode": "tozero",
                "showgrid": False})
    _shade_pauses(run, layout, times[-1] if times else None)
    if run.pauses:
        total = sum(((p.end or p.start) - p.start).total_seconds() for p in run.pauses)
        section.notes.append(f"Judge paused {len(run.pauses)} time(s), {_duration(total)} in all.")
    section.figure = {"data": data, "layout": layout}
    return section


def _per_minute(judge: dict[str, Any] | None, key: str, step: dict[str, Any]) -> float | None:
    value, step_s = (judge or {}).get(key), step.get("step_s")
    if not (_num(value) and _num(step_s)) or step_s <= 0:
        return None
    return round(value * 60.0 / step_s, 1)


def _endpoint_rates(times: list[str], judged: list[dict[str, Any] | None],
                    steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """calls/min per endpoint, when the step events break the judge counts down by endpoint."""
    names = sorted({name for j in judged if j and isinstance(j.get("endpoints"), dict) for name in j["endpoints"]})
    if len(names) < 2:
        return []
    traces = []
    for name in names:
        ys = [_per_minute(((j or {}).get("endpoints") or {}).get(name), "calls", s) for j, s in zip(judged, steps)]
        trace = _line(times, ys, f"calls/min {html.escape(name)}", None, "y")  # plotly reads names as HTML
        trace["line"] = {"dash": "dot"}
        traces.append(trace)
    return traces


def _failed(step: dict[str, Any]) -> int:
    return sum((_counts(step.get(k)).get("judge_failed", 0)) for k in ("trajectories", "validation_trajectories"))


def _shade_pauses(run: RunLog, layout: dict[str, Any], last_time: str | None) -> None:
    """One shaded band per pause; one colour and one label row per endpoint."""
    endpoints = sorted({p.endpoint or "" for p in run.pauses})
    for p in run.pauses:
        lane = endpoints.index(p.endpoint or "")
        end = plot_time(p.end) if p.end else last_time or plot_time(p.start)
        layout.setdefault("shapes", []).append(
            {"type": "rect", "xref": "x", "yref": "paper", "x0": plot_time(p.start), "x1": end, "y0": 0, "y1": 1,
             "fillcolor": PAUSE_COLOURS[lane % len(PAUSE_COLOURS)], "line": {"width": 0}, "layer": "below"})
        label = "paused" + (f": {p.endpoint}" if p.endpoint else "") + ("" if p.resumed else " (to the end)")
        layout.setdefault("annotations", []).append(
            {"x": plot_time(p.start), "y": 1 - 0.06 * lane, "xref": "x", "yref": "paper", "text": html.escape(label),
             "showarrow": False, "xanchor": "left", "yanchor": "top", "font": {"size": 10, "color": "#a00"}})


# ---------------------------------------------------------------- where time went


def timeline_section(run: RunLog) -> Section:
    section = Section("timeline", "Where time went",
                      "Per step, how the device spent the step's wall time (generation, learning, idle) "
                      "and the share of it the judge was busy. The judge line running high while the "
                      "device bars stay full is the overlap: the device works while the judge answers.")
    steps = [s for s in run.ordered_steps() if isinstance(s.get("busy"), dict)]
    if not steps:
        section.empty = "No step with busy fractions in this log."
        return section
    xs = [s["step"] for s in steps]

    def busy(stage: str) -> list[float | None]:
        return [s["busy"].get(stage) if _num(s["busy"].get(stage)) else None for s in steps]

    idle = [s.get("device_idle_fraction") if _num(s.get("device_idle_fraction")) else None for s in steps]
    data = [
        _bars(xs, busy("generator"), "generator", COLOURS["generator"], "y"),
        _bars(xs, busy("learner"), "learner", COLOURS["learner"], "y"),
        _bars(xs, idle, "device idle", COLOURS["idle"], "y"),
        {**_line(xs, busy("judge"), "judge busy", COLOURS["judge"], "y"), "line": {"color": COLOURS["judge"], "width": 3}},
        {**_line(xs, [s.get("step_s") if _num(s.get("step_s")) else None for s in steps], "step wall time (s)",
                 COLOURS["step_s"], "y2"), "line": {"dash": "dot", "color": COLOURS["step_s"]}},
    ]
    layout = _layout(barmode="stack",
                     xaxis=_step_axis(run),
                     yaxis={"title": {"text": "share of the step"}, "rangemode": "tozero", "tickformat": ".0%", **GRID},
                     yaxis2={"title": {"text": "seconds"}, "overlaying": "y", "side": "right", "rangemode": "tozero",
                             "showgrid": False})
    for trace in data[:4]:
        trace["hovertemplate"] = "%{y:.1%}"
    section.figure = {"data": data, "layout": layout}
    return section


# ---------------------------------------------------------------- learner health

LEARNER_PANELS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("loss", ("loss",), "linear"),
    ("KL to the base model", ("kl",), "linear"),
    ("clipped fraction", ("clipped_fraction",), "linear"),
    ("ratio mean / max", ("ratio_mean", "ratio_max"), "linear"),
    ("log-prob mismatch", ("logprob_mismatch",), "log"),
    ("zero-variance share", ("zero_variance_share",), "linear"),
    ("policy lag (steps)", ("policy_lag",), "linear"),
    ("importance weight mean", ("tis_weight_mean",), "linear"),
    ("offers addressing the judge (flagged)", ("injection_flagged",), "linear"),
)


def learner_section(run: RunLog) -> Section:
    section = Section("learner", "Learner health",
                      "Per step: loss, KL to the base model (when training.beta > 0), share of tokens whose "
                      "ratio was clipped, importance ratio mean and max, sampler/trainer log-prob mismatch, "
                      "share of groups without signal, policy lag, the mean truncated importance weight and the "
                      "training offers flagged as addressing the judge (prompt injection).")
    steps = run.ordered_steps()
    if not steps:
        section.empty = "No step in this log."
        return section
    xs = [s["step"] for s in steps]
    cols, rows = 2, math.ceil(len(LEARNER_PANELS) / 2)
    layout = _layout(height=155 * rows, hovermode="x", showlegend=False)
    data: list[dict[str, Any]] = []
    dtick = _step_axis(run)["dtick"]
    for i, (title, keys, scale) in enumerate(LEARNER_PANELS):
        n = i + 1
        col, row = i % cols, i // cols
        x0 = col * 0.54
        top = 1.0 - row / rows
        domain_y = [max(0.0, top - 1.0 / rows + 0.07), top - 0.03]
        xa, ya = f"xaxis{n if n > 1 else ''}", f"yaxis{n if n > 1 else ''}"
        layout[xa] = {"domain": [x0, x0 + 0.46], "anchor": f"y{n if n > 1 else ''}", "tick0": 0, "dtick": dtick,
                      **GRID}
        layout[ya] = {"domain": domain_y, "anchor": f"x{n if n > 1 else ''}", "type": scale, **GRID}
        has_data = False
        for key in keys:
            ys = [s.get(key) if _num(s.get(key)) else None for s in steps]
            if scale == "log":
                ys = [y if y is not None and y > 0 else None for y in ys]
            has_data |= any(y is not None for y in ys)
            # connected across steps without a value (a mismatch is measured only on some steps)
            data.append({"x": xs, "y": ys, "mode": "lines+markers", "name": key, "type": "scatter",
                         "xaxis": f"x{n if n > 1 else ''}", "yaxis": f"y{n if n > 1 else ''}",
                         "marker": {"size": 5}, "connectgaps": True})
        layout.setdefault("annotations", []).append(
            {"text": f"<b>{html.escape(title)}</b>", "x": x0, "y": domain_y[1], "xref": "paper", "yref": "paper",
             "xanchor": "left", "yanchor": "bottom", "showarrow": False, "font": {"size": 12}})
        if not has_data:
            layout["annotations"].append(
                {"text": "no data in this log", "x": x0 + 0.23, "y": sum(domain_y) / 2, "xref": "paper",
                 "yref": "paper", "showarrow": False, "font": {"color": "#888"}})
            section.notes.append(f"{title}: no data in this log.")
    section.figure = {"data": data, "layout": layout}
    return section


# ---------------------------------------------------------------- checkpoints


def checkpoints_section(run: RunLog) -> Section:
    section = Section("checkpoints", "Checkpoints",
                      "Each `best` and `latest` save on the step axis (hover for its URI and time).")
    if not run.checkpoints:
        section.empty = "No checkpoint saved in this log."
        return section
    data = []
    for kind in ("latest", "best"):
        saves = [c for c in run.checkpoints if c.get("kind") == kind]
        if saves:
            data.append({"x": [c["step"] for c in saves], "y": [kind] * len(saves), "mode": "markers",
                         "type": "scatter", "name": kind,
                         "text": [html.escape(f"{c.get('uri', '')} at {c.get('timestamp', '')}") for c in saves],
                         "hovertemplate": "step %{x}<br>%{text}<extra>" + kind + "</extra>",
                         "marker": {"size": 12, "symbol": "star" if kind == "best" else "circle",
                                    "color": COLOURS[kind]}})
    layout = _layout(height=220, hovermode="closest",
                     xaxis=_step_axis(run),
                     yaxis={"type": "category", "categoryorder": "array", "categoryarray": ["latest", "best"], **GRID})
    _mark_resumes(run, layout)
    section.figure = {"data": data, "layout": layout}
    return section


# ---------------------------------------------------------------- helpers


def _step_axis(run: RunLog) -> dict[str, Any]:
    """A step axis with whole-step ticks, about ten of them however long the run."""
    steps = list(run.steps) + [c["step"] for c in run.checkpoints]
    span = (max(steps) - min(steps)) if steps else 1
    return {"title": {"text": "step"}, "tick0": 0, "dtick": max(1, math.ceil(span / 10)), **GRID}


def _layout(**overrides: Any) -> dict[str, Any]:
    return {**BASE_LAYOUT, **overrides}


def _line(xs: list[Any], ys: list[Any], name: str, colour: str | None, axis: str) -> dict[str, Any]:
    trace: dict[str, Any] = {"x": xs, "y": ys, "mode": "lines+markers", "name": name, "type": "scatter",
                             "yaxis": axis, "connectgaps": False}
    if colour:
        trace["line"] = {"color": colour}
    return trace


def _bars(xs: list[Any], ys: list[Any], name: str, colour: str, axis: str) -> dict[str, Any]:
    return {"x": xs, "y": ys, "name": name, "type": "bar", "yaxis": axis, "marker": {"color": colour}}


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    return f"{value:,}" if _num(value) else "?"


def _text(value: Any) -> str:
    return "not in this log" if value is None or value == "" else str(value)


def plot_time(ts: datetime.datetime | None) -> str:
    """A time as plotly.js reads dates (it ignores zone suffixes): UTC, without one."""
    assert ts is not None
    return ts.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _time(ts: datetime.datetime | None) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "not in this log"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s" if m else f"{s} s"

