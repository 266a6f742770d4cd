"""The `ovsnvgre` command: the root group, its subcommands imported only when they run.

The subcommands live in commands.py (this host) and lab/cli.py (`ovsnvgre lab`);
importing them means importing most of the package (~0.1 s), which `ovsnvgre
--help`, shell completion and a mistyped command need not pay.  SUBCOMMANDS says
where each one is and what its help's first paragraph says; a test checks both
against the commands themselves.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from ovsnvgre import __version__

# name -> ("module:attribute", the first paragraph of its help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "confirm": ("ovsnvgre.commands:confirm_command",
                "Keep the change of a running `up --confirm` (or of a run that crashed)."),
    "down": ("ovsnvgre.commands:down", "Remove exactly what ovsnvgre made on this host."),
    "lab": ("ovsnvgre.lab.cli:lab",
            "A whole fabric on this machine, in network namespaces (needs root)."),
    "plan": ("ovsnvgre.commands:plan",
             "Show what `up` would change on this host; changes nothing."),
    "rollback": ("ovsnvgre.commands:rollback_command",
                 "Return the host to the state saved before the last unfinished run."),
    "status": ("ovsnvgre.commands:status",
               "Show this host as it runs, and how it drifted from the fabric."),
    "trace": ("ovsnvgre.commands:trace",
              "Show what the switch does with one packet, in the fabric's terms."),
    "up": ("ovsnvgre.commands:up", "Make this host's switch match the fabric."),
    "validate": ("ovsnvgre.commands:validate",
                 "Check a fabric file and say what it describes; changes nothing."),
    "watch": ("ovsnvgre.commands:watch",
              "Keep this host converged until stopped (SIGTERM or Ctrl-C)."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when one is used (the pattern of Click's
    "Lazily Loading Subcommands"); its --help lists them from SUBCOMMANDS alone."""

    def __init__(self, *args: object, lazy: dict[str, tuple[str, str]], **kwargs: object
                 ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every subcommand's name, sorted."""
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The subcommand ``cmd_name``, imported now; None for an unknown name."""
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)  # noqa: S101 - an invariant the code above guarantees, not input checking
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The "Commands" section, as Click writes it, without importing any command."""
        listed = {name: click.Command(name, help=summary)
                  for name, (_, summary) in self.lazy.items()}
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, (listed.get(name) or self.get_command(ctx, name))
                 .get_short_help_str(limit)) for name in names]  # type: ignore[union-attr]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ovsnvgre")
@click.option("--debug", is_flag=True, help="Show tracebacks and library logs on failure.")
def main(debug: bool) -> None:
    """Provision Open vSwitch hosts for NVGRE overlay networks (RFC 7637).

    One fabric file describes every host's Provider Address, the virtual
    subnets (VSIDs) and every VM; `ovsnvgre up` on each host makes its switch
    match the file, and running it again changes nothing.

    Exit status: 0 success, 1 the switch or the system failed, 2 a bad fabric
    file or bad arguments, 3 `status` found the host drifted from the fabric.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.CRITICAL,
                        format="%(levelname)s %(name)s: %(message)s")


def run() -> None:
    """The `ovsnvgre` command: main(), then an exit that does not free every object.

    A run at fabric scale holds some 100,000 objects (flows, VMs, rows); letting the
    interpreter free them one by one on the way out took ~35 ms of a 0.5 s no-op.
    Output and logs are flushed first, and nothing else is left to do: the
    `--confirm` timer is a process of its own, and the OVSDB connection is closed.
    """
    try:
        main()
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # the reader went away (`ovsnvgre plan | head -1`)
            status = status or 1  # as Click does when a write meets a closed pipe
    os._exit(status)


def _exit_status(code: object) -> int:
    """What sys.exit(code) would leave the process with."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    main()
