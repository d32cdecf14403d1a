"""Errors a user can fix: unknown names, missing or bad input, bad combinations."""
from __future__ import annotations


class UserError(ValueError):
    """A mistake of the user; the message says what was wrong and what to do."""
