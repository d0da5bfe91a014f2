"""Weights & Biases: step metrics go there when WANDB_API_KEY is set; otherwise nothing happens.

`wandb.mode` = auto (online iff WANDB_API_KEY is set), online, offline (a local run folder,
synced later with `wandb sync`) or disabled. wandb is an optional extra (`pip install
jobrl-async[wandb]`); asking for it without it installed is a clear config error.
"""

from __future__ import annotations

from typing import Any

from ..config import Config, Secrets
from ..errors import ConfigError
from .log import redact_value


class WandbSink:
    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def start(cls, cfg: Config, secrets: Secrets, directory: str | None = None) -> "WandbSink | None":
        mode = cfg.wandb.mode
        if mode == "auto":
            mode = "online" if secrets.wandb_api_key else "disabled"
        if mode == "disabled":
            return None
        try:
            import wandb
        except ImportError:
            raise ConfigError(f"wandb.mode={cfg.wandb.mode!r} needs the wandb package: "
                              "pip install 'jobrl-async[wandb]'") from None
        run = wandb.init(
            project=cfg.wandb.project, entity=cfg.wandb.entity or None, name=cfg.wandb.run_name or None,
            # No keys live in the config, but a URL in it may carry user:password@: redacted.
            mode=mode, dir=directory, config=redact_value(cfg.as_dict()),
        )
        return cls(run)

    def log_step(self, fields: dict[str, Any]) -> None:
        self.run.log(_flatten(fields), step=int(fields["step"]), commit=True)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def _flatten(fields: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numbers as "busy/judge"-style keys; strings and None are left out."""
    out: dict[str, float] = {}
    for key, value in fields.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out
