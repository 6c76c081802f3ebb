"""Heads: each imports its codebase, so import them only where it is installed."""
