"""Local Chat Completions server fixture (see issue 5)."""
