"""The errors users see. Each one names its culprit; the CLI prints it as one line, exit 1.

    JobrlError
    ├── ConfigError      a config key, file or environment variable
    ├── DataError        a dataset source and record index
    ├── ModelError       a model name or path
    ├── JudgeError       the judge endpoint (never its key)
    ├── StorageError     a bucket/key or path
    └── CheckpointError  a checkpoint URI
"""

from __future__ import annotations


class JobrlError(Exception):
    """Base of every error that is the user's input or environment, not a bug."""

    kind = "error"

    def __str__(self) -> str:  # "config: unknown key 'x'" reads well on one line
        return f"{self.kind}: {super().__str__()}"


class ConfigError(JobrlError):
    kind = "config"


class DataError(JobrlError):
    kind = "data"


class ModelError(JobrlError):
    kind = "model"


class JudgeError(JobrlError):
    kind = "judge"


class StorageError(JobrlError):
    kind = "storage"


class CheckpointError(JobrlError):
    kind = "checkpoint"
