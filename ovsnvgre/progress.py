"""The progress callback every long run takes: one line of what it does next."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A Progress that says nothing (library calls without a terminal)."""
