"""`python -m ovsnvgre`: the same as the `ovsnvgre` command."""

from ovsnvgre.cli import run

run()
