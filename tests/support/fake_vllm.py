"""Fake OpenAI-compatible completions server (vLLM stand-in) fixtures (see issue 10)."""
