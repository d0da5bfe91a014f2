"""`jobrl-async bench learning` for real: the tiny model, the stub judge, two steps, two seeds,
in a subprocess as a user runs it; its page in headless Chromium. The maths: test_curves.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from jobrl_async.cli import main
from jobrl_async.commands.learning import parse_schedules
from jobrl_async.errors import JobrlError

from .support.browser import chromium, render_page

pytestmark = pytest.mark.slow

FIGURES = {"validation_first_mean", "validation_final_mean", "validation_final_sd", "reward_last5_mean",
           "wall_s_mean", "s_per_step_mean"}
SMALL = """
[training]
batch_contexts = 2
attempts = 4
[validation]
max_contexts = 2
attempts = 2
[generation]
max_new_tokens = 24
[judge]
max_concurrency = 8
"""


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[list[dict], Path]:
    tmp = tmp_path_factory.mktemp("learning")
    (tmp / "small.toml").write_text(SMALL)
    page = tmp / "learning.html"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBRL_", "AWS_", "AZURE_", "OPENAI_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "jobrl_async", "bench", "learning", "--config", str(tmp / "small.toml"),
         "--steps", "2", "--seeds", "2", "--judge-latency-ms", "20", "-o", str(page)],
        capture_output=True, env=env, cwd=tmp, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    lines = [orjson.loads(line) for line in proc.stdout.splitlines() if line.startswith(b"{")]
    return lines, page


def test_two_steps_print_a_line_per_run_then_the_summary(smoke: tuple[list[dict], Path]) -> None:
    lines, page = smoke
    runs = [line for line in lines if "schedule" in line and "event" not in line]
    assert [(r["schedule"], r["seed"]) for r in runs] == [("sequential", 0), ("pipelined", 0),
                                                          ("sequential", 1), ("pipelined", 1)]
    for r in runs:
        assert r["steps"] == 2 and r["wall_s"] > 0
        steps_done = [p[0] for p in r["validation"]]
        assert steps_done == [0, 1, 2]  # the start, round 2 (one step done), the final weights
        assert r["validation_first"] == r["validation"][0][2] and r["validation_final"] == r["validation"][-1][2]
    by_seed: dict[int, set[float]] = {}
    for r in runs:  # the same start and the same sampling seeds: the same first score
        by_seed.setdefault(r["seed"], set()).add(r["validation_first"])
    assert all(len(scores) == 1 for scores in by_seed.values()), by_seed

    summary = lines[-1]
    assert (summary["steps"], summary["seeds"], summary["judge_latency_ms"]) == (2, 2, 20.0)
    for schedule in ("sequential", "pipelined"):
        assert set(summary[schedule]) >= FIGURES
        mine = [r for r in runs if r["schedule"] == schedule]
        assert summary[schedule]["validation_final_mean"] == pytest.approx(
            sum(r["validation_final"] for r in mine) / 2, abs=1e-3)
        assert summary[schedule]["wall_s_mean"] == pytest.approx(sum(r["wall_s"] for r in mine) / 2, abs=0.02)
    walls = {s: summary[s]["wall_s_mean"] for s in ("sequential", "pipelined")}
    assert summary["speedup_wall"] == pytest.approx(walls["sequential"] / walls["pipelined"], rel=0.01)
    assert "final_gap_in_sd" in summary
    assert set(summary["time_to_sequential_final_s"]) == {"sequential", "pipelined"}
    assert summary["time_to_sequential_final_s"]["sequential"] is not None  # its own final is on its curve
    assert summary["page"] == str(page)


def test_the_page_holds_the_three_figures_offline(smoke: tuple[list[dict], Path]) -> None:
    _, page = smoke
    text = page.read_text()
    for plot in ("plot-per-step", "plot-per-second", "plot-reward"):
        assert f'id="{plot}"' in text
    assert "https://" not in text.split("<script>")[0]  # nothing fetched: plotly.js is inlined below
    assert "Does the overlap cost learning?" in text
    assert "2 contexts x 2 attempts every step; x 8 attempts on the start" in text  # the deciding rounds draw more


def test_the_page_renders_in_headless_chromium(smoke: tuple[list[dict], Path]) -> None:
    if chromium() is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's package)")
    _, page = smoke
    result = render_page(page)
    assert result.errors == []
    assert result.external_requests == [], "the page must open offline"
    assert result.plots_drawn == 3
    for plot_id, drawn in result.plots.items():
        assert drawn["svg"] >= 1 and drawn["width"] > 600 and drawn["height"] > 150, plot_id
        # two schedules: a mean line and a band each
        assert drawn["lines"] >= 4 and drawn["points"] > 0, f"{plot_id}: {drawn}"


def test_unknown_or_baseline_less_schedules_are_refused(capsys: pytest.CaptureFixture) -> None:
    assert parse_schedules("sequential, pipelined-lag2,pipelined-lag2") == ["sequential", "pipelined-lag2"]
    with pytest.raises(JobrlError, match="pipelined-lag3"):
        parse_schedules("sequential,pipelined-lag3")
    assert main(["bench", "learning", "--schedules", "pipelined"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--schedules must include sequential" in err


def test_a_page_that_cannot_be_written_is_said_before_any_training(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "no-such-folder" / "learning.html"
    assert main(["bench", "learning", "-o", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-folder" in err and "-o" in err


def test_the_page_header_says_when_the_sequential_final_score_was_not_reached() -> None:
    from jobrl_async.config import load_config
    from jobrl_async.report.learning import header_rows

    figures = dict.fromkeys(FIGURES, 1.0)
    summary = {"steps": 4, "seeds": 2, "judge_latency_ms": 600.0, "sequential": figures,
               "pipelined": {**figures, "speedup_wall": 1.5, "final_gap_in_sd": -0.5},
               "time_to_sequential_final_s": {"sequential": 12.25, "pipelined": None}}
    rows = dict(header_rows(summary, load_config(env={}), end_attempts=4))
    assert "sequential's final score at 12.2 s" in rows["sequential"]
    assert "sequential's final score not reached" in rows["pipelined"]
    assert "speed-up 1.50x" in rows["pipelined"] and "final gap -0.50 pooled sd" in rows["pipelined"]
    assert "x 8 attempts on the start's and the final weights" in rows["validation"]
