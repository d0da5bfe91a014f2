"""One line on stderr per phase of a run's start, for a person waiting on it.

    jobrl-async: loading torch, the dataset and the model 'tiny' (the tiny model: ~15 s on 2 cores)
    jobrl-async: model ready after 9.6 s (1.3M parameters on cpu)
    jobrl-async: first step: sampling 10 contexts x 10 offers, judging them, one optimizer step (tiny on a CPU: ~25 s)
    jobrl-async: first step done after 31.0 s; the JSON log is on stdout

Only the start: after the first step the progress line (on a terminal) and the JSON log on
stdout tell the rest. The set-up before Python starts says its own phases (bin/_venv.sh).
`logging.phases`: `auto` (default) writes them when stderr is a terminal, so collected daemon
logs and scripts reading stderr never get them; `on` / `off` decide.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ..config import TINY_MODEL

# Measured on a fresh clone, 2 CPU cores shared with other work (README, the opening section).
TINY_LOAD_S = 15  # the first run after set-up: ~16 s (Python compiles the bytecode), later ~10 s
TINY_FIRST_STEP_S = 25


class PhaseLines:
    """A log listener (`log.add_listener`) that says each phase as it begins."""

    def __init__(self, stream: TextIO | None = None, clock: Any = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()
        self.done = False

    @staticmethod
    def wanted(setting: str, stream: TextIO) -> bool:
        return setting == "on" or (setting == "auto" and stream.isatty())

    def say(self, text: str) -> None:
        print(f"jobrl-async: {text}", file=self.stream, flush=True)

    def loading(self, model: str) -> None:
        usual = f" (the tiny model: ~{TINY_LOAD_S} s on 2 cores)" if model == TINY_MODEL else ""
        self.say(f"loading torch, the dataset and the model '{model}'{usual}")

    def __call__(self, event: dict[str, Any]) -> None:
        if self.done:
            return
        name = event.get("event")
        if name == "model_loaded":
            self.say(f"model ready after {self._elapsed()} ({_millions(event.get('parameters'))} parameters "
                     f"on {event.get('device')})")
        elif name == "run_started":
            usual = (f" (tiny on a CPU: ~{TINY_FIRST_STEP_S} s)"
                     if event.get("model") == TINY_MODEL and event.get("device") == "cpu" else "")
            self.say(f"first step: sampling {event.get('batch_contexts')} contexts x {event.get('attempts')} "
                     f"offers, judging them, one optimizer step{usual}")
        elif name == "step":
            self.say(f"first step done after {self._elapsed()}; the JSON log is on stdout")
            self.done = True

    def _elapsed(self) -> str:
        return f"{self.clock() - self.started:.1f} s"


def _millions(count: Any) -> str:
    return f"{count / 1e6:.1f}M" if isinstance(count, (int, float)) else "?"
