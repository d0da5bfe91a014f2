"""The progress line: drawn in place on a terminal, silent elsewhere, never on stdout."""

from __future__ import annotations

import io

import pytest

from jobrl_async.ops.progress import ProgressLine, ProgressState, format_duration, format_line


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class BrokenTTY(FakeTTY):
    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # what shutil.get_terminal_size reports for a stream without fileno


def step(n: int, **extra) -> dict:
    fields = {"step": n, "epoch": 0, "reward_mean": 6.0 + n / 10, "reward_std": 1.5, "judge_rpm": 580.0,
              "step_s": 30.0, "skipped_groups": 0, "trajectories": {"scored": 100, "judge_failed": 0, "dropped": 0}}
    fields.update(extra)
    return fields


def test_draws_in_place_on_a_tty() -> None:
    tty = FakeTTY()
    line = ProgressLine(total_steps=10, stream=tty)
    assert line.enabled
    line.update(step(1))
    line.update(step(2, validation_score=7.25))
    out = tty.getvalue()
    assert "\n" not in out  # redrawn with \r, never scrolled
    frames = out.split("\r")[1:]
    assert frames[0].startswith("step 1/10 10% | epoch 1 | reward 6.10 ±1.50 | judge 580 rpm | ETA 4m30s")
    assert frames[1].rstrip() == "step 2/10 20% | epoch 1 | reward 6.20 ±1.50 | val best 7.25 | judge 580 rpm | ETA 4m00s"


def test_close_erases_the_line_once() -> None:
    tty = FakeTTY()
    line = ProgressLine(total_steps=10, stream=tty)
    line.update(step(1))
    drawn = len(tty.getvalue()) - 1
    line.close()
    assert tty.getvalue().endswith("\r" + " " * drawn + "\r")
    size = len(tty.getvalue())
    line.close()
    line.update(step(2))  # after close: silent
    assert len(tty.getvalue()) == size


def test_a_shorter_line_erases_the_longer_one() -> None:
    tty = FakeTTY()
    line = ProgressLine(total_steps=100, stream=tty)
    line.update(step(1, validation_score=7.0))
    long_frame = tty.getvalue().split("\r")[-1]
    tty.seek(0)
    tty.truncate()
    line.update({"step": 2, "epoch": 0})  # fewer fields would give a shorter line...
    frame = tty.getvalue().split("\r")[-1]
    assert len(frame) == len(long_frame)  # ...but it is padded over the old one
    assert frame.startswith("step 2/100 2% | epoch 1 | reward 6.10 ±1.50 | val best 7.00")


def test_writes_nothing_when_not_a_tty() -> None:
    pipe = io.StringIO()
    line = ProgressLine(total_steps=10, stream=pipe)
    assert not line.enabled
    for n in range(1, 4):
        line.update(step(n))
    line.close()
    assert pipe.getvalue() == ""
    assert line.state.step == 3  # still tracks, for a caller that asks


def test_enabled_overrides_the_tty_check() -> None:
    tty, pipe = FakeTTY(), io.StringIO()
    ProgressLine(total_steps=10, stream=tty, enabled=False).update(step(1))
    ProgressLine(total_steps=10, stream=pipe, enabled=True).update(step(1))
    assert tty.getvalue() == ""
    assert pipe.getvalue().startswith("\rstep 1/10")


def test_never_writes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    line = ProgressLine(total_steps=5, enabled=True)  # the default stream: stderr
    line.update(step(1))
    line.close()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "step 1/5" in captured.err


def test_fits_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    tty = FakeTTY()
    ProgressLine(total_steps=1000, stream=tty).update(step(1, validation_score=7.0))
    frame = tty.getvalue().split("\r")[-1]
    assert len(frame) == 39 and frame.endswith("…")


def test_a_broken_terminal_turns_it_off_without_raising() -> None:
    line = ProgressLine(total_steps=10, stream=BrokenTTY())
    line.update(step(1))
    assert not line.enabled
    line.close()


def test_epoch_progress_and_resumed_runs() -> None:
    state = ProgressState(total_steps=144, steps_per_epoch=48, epochs=3)
    state.apply(step(85, epoch=1, step_s=20.0, best_score=7.5))
    assert format_line(state) == (
        "step 85/144 59% | epoch 2/3 77% | reward 14.50 ±1.50 | val best 7.50 | judge 580 rpm | ETA 19m40s"
    )


def test_eta_follows_recent_steps_only() -> None:
    state = ProgressState(total_steps=100)
    for n in range(1, 21):
        state.apply({"step": n, "step_s": 100.0 if n <= 10 else 10.0})
    assert state.eta_s() == 80 * 10.0
    assert format_line(ProgressState(total_steps=3)).endswith("ETA --")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.4, "59s"), (60, "1m00s"), (725, "12m05s"), (3600, "1h00m"), (11_220, "3h07m"),
    (187_200, "2d04h"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
