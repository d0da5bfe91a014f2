"""`jobrl-async config show`."""

from __future__ import annotations

import argparse

from ..config import BUNDLED_DATASET, SEED_DATASET, Config, Secrets, render_toml
from ..ops.log import redact

# What "bundled" means, said where users look (the seed's own data lives in S3).
BUNDLED_NOTE = f"the dataset shipped in the package; to train on the seed's: {SEED_DATASET}"


def show(args: argparse.Namespace, cfg: Config) -> int:
    # Redacted as a whole: a URL (generator.urls, a judge endpoint) may carry user:password@.
    print(redact(annotate(render_toml(cfg))), end="")
    print(redact(_secrets_block(Secrets.from_env())))
    return 0


def annotate(toml: str) -> str:
    """The rendered configuration with a note on `data.dataset = "bundled"` (a comment: still TOML)."""
    lines, section = [], ""
    for line in toml.splitlines():
        if line.startswith("["):
            section = line
        elif section == "[data]" and line.startswith(f'dataset = "{BUNDLED_DATASET}"'):
            line += (", " if "#" in line else "  # ") + BUNDLED_NOTE
        lines.append(line)
    return "\n".join(lines) + "\n"


def _secrets_block(s: Secrets) -> str:
    """Which secrets are set, never their values (endpoints are shown: they are not secret)."""

    def state(value: str) -> str:
        return '"[set, redacted]"' if value else '"[not set]"'

    return "\n".join(
        [
            "# from the environment only",
            "[secrets]",
            f"judge_backend = \"{s.judge_backend}\"",
            f"AZURE_OPENAI_API_KEY = {state(s.azure_api_key)}",
            f"AZURE_OPENAI_ENDPOINT = \"{s.azure_endpoint}\"",
            f"AZURE_DEPLOYMENT_NAME = \"{s.azure_deployment}\"",
            f"OPENAI_API_KEY = {state(s.openai_api_key)}",
            f"OPENAI_BASE_URL = \"{s.openai_base_url}\"",
            f"VLLM_API_KEY = {state(s.vllm_api_key)}",
            f"WANDB_API_KEY = {state(s.wandb_api_key)}",
        ]
    )
