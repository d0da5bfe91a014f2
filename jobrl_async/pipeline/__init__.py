"""The training pipeline, a module per job; `stages.py` wires the six stages together.

    stages.py      the six stages, the queues between them and the one place they overlap
    work.py        what the producer hands the generator: a step's batch, a validation round
    validation.py  validation rounds: the adapter each sampled, trusted scores, a new `best`
    saves.py       checkpoint requests: `best`, `latest` (weights and progress of one step)
    publish.py     remote generation: the adapter published to the servers after each step
    reporting.py   one `step` event per step, in order; the run's summary
    shutdown.py    winding down: leftovers counted, the final `latest`, uploads finished
    sequential.py  the seed's loop, kept as the baseline
    assemble.py    a run's parts built from the configuration, checked, resumed
    daemon.py      `run`: signals, metrics endpoint, the run, its summary and exit code
"""

from .assemble import Parts, Progress, build
from .reporting import Observers, Summary
from .stages import Pipeline

__all__ = ["Observers", "Parts", "Pipeline", "Progress", "Summary", "build"]
