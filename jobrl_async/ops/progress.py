"""A live progress line on stderr for people watching a run in a terminal.

    step 37/144 26% | epoch 1/3 77% | reward 6.42 ±1.31 | val best 7.10 | judge 583 rpm | ETA 1h02m

It is redrawn in place with a carriage return, once per `step` event, and erased at the end. It
only ever writes to its own stream (stderr): stdout carries the JSON log lines and must stay
parseable. Off unless that stream is a terminal, so logs collected by Docker, Kubernetes or
systemd never carry it. No escape codes: padding with spaces erases, so a dumb terminal works too.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

ETA_WINDOW = 10  # steps whose mean duration predicts the rest


@dataclass
class ProgressState:
    """What the line shows, folded from the step events seen so far."""

    total_steps: int
    steps_per_epoch: int = 0  # 0: unknown, the epoch is shown without its share
    epochs: int = 0
    step: int = 0
    epoch: int = 0  # 0-based, as in the step event
    reward_mean: float | None = None
    reward_std: float | None = None
    best_score: float | None = None
    judge_rpm: float | None = None
    recent_step_s: deque[float] = field(default_factory=lambda: deque(maxlen=ETA_WINDOW))

    def apply(self, fields: dict[str, Any]) -> None:
        self.step = int(fields.get("step", self.step))
        self.epoch = int(fields.get("epoch", self.epoch))
        if fields.get("reward_mean") is not None:
            self.reward_mean = fields["reward_mean"]
            self.reward_std = fields.get("reward_std")
        for key in ("validation_score", "best_score"):
            score = fields.get(key)
            if score is not None and (self.best_score is None or score > self.best_score):
                self.best_score = score
        if fields.get("judge_rpm") is not None:
            self.judge_rpm = fields["judge_rpm"]
        if fields.get("step_s") is not None:
            self.recent_step_s.append(fields["step_s"])

    def eta_s(self) -> float | None:
        if not self.recent_step_s:
            return None
        mean = sum(self.recent_step_s) / len(self.recent_step_s)
        return max(0, self.total_steps - self.step) * mean


def format_line(state: ProgressState) -> str:
    parts = [f"step {state.step}/{state.total_steps} {_percent(state.step, state.total_steps)}"]
    parts.append(_epoch_text(state))
    if state.reward_mean is not None:
        std = f" ±{state.reward_std:.2f}" if state.reward_std is not None else ""
        parts.append(f"reward {state.reward_mean:.2f}{std}")
    if state.best_score is not None:
        parts.append(f"val best {state.best_score:.2f}")
    if state.judge_rpm is not None:
        parts.append(f"judge {state.judge_rpm:.0f} rpm")
    eta = state.eta_s()
    parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA --")
    return " | ".join(parts)


def _epoch_text(state: ProgressState) -> str:
    of = f"/{state.epochs}" if state.epochs else ""
    text = f"epoch {state.epoch + 1}{of}"
    if state.steps_per_epoch and state.step:
        done_in_epoch = state.step - state.epoch * state.steps_per_epoch
        text += f" {_percent(done_in_epoch, state.steps_per_epoch)}"
    return text


def _percent(done: int, total: int) -> str:
    return f"{100 * done // total}%" if total > 0 else "?%"


def format_duration(seconds: float) -> str:
    """`45s`, `12m05s`, `3h07m`, `2d04h`: two units at most, enough for an ETA."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class ProgressLine:
    """The live line. `update` once per step event, `close` at the end (idempotent).

    `stream` defaults to sys.stderr; `enabled=None` means "if that stream is a terminal".
    """

    def __init__(self, total_steps: int, stream: TextIO | None = None, enabled: bool | None = None, *,
                 steps_per_epoch: int = 0, epochs: int = 0) -> None:
        self._stream = sys.stderr if stream is None else stream  # looked up now: redirections apply
        self.enabled = _is_tty(self._stream) if enabled is None else enabled
        self.state = ProgressState(total_steps, steps_per_epoch=steps_per_epoch, epochs=epochs)
        self._drawn = 0  # characters currently on the line

    def update(self, fields: dict[str, Any]) -> None:
        self.state.apply(fields)
        if self.enabled:
            self._draw(_fit(format_line(self.state), _columns(self._stream)))

    def clear(self) -> None:
        """Erase the line (before something else writes to the same terminal); `update` redraws it."""
        if self.enabled and self._drawn:
            self._write("\r" + " " * self._drawn + "\r")
            self._drawn = 0

    def close(self) -> None:
        self.clear()
        self.enabled = False

    def _draw(self, line: str) -> None:
        pad = " " * max(0, self._drawn - len(line))  # spaces erase what a longer line left behind
        self._write("\r" + line + pad)
        self._drawn = len(line)

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken terminal must not stop training
            self.enabled = False


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _columns(stream: Any) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return shutil.get_terminal_size().columns


def _fit(line: str, columns: int) -> str:
    """A line one column short of the terminal: a wrapped line could not be redrawn with \\r."""
    width = max(columns - 1, 20)
    return line if len(line) <= width else line[: width - 1] + "…"
