"""`jobrl-async config show`."""

from __future__ import annotations

import argparse

from ..config import Config, Secrets, render_toml


def show(args: argparse.Namespace, cfg: Config) -> int:
    print(render_toml(cfg), end="")
    print(_secrets_block(Secrets.from_env()))
    return 0


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
            f"WANDB_API_KEY = {state(s.wandb_api_key)}",
        ]
    )
