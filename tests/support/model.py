"""Tiny model fixtures (see issue 4)."""
