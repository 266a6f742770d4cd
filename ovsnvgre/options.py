"""What every command shares: its options, its progress lines, and clean failure."""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ovsnvgre.errors import OvsnvgreError

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_ENV = "OVSNVGRE_CONFIG"


def fail_cleanly(func: F) -> F:
    """One line and an exit status for every failure; the traceback only with --debug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return func(*args, **kwargs)
        except OvsnvgreError as exc:
            if debug:
                raise
            click.echo(f"ovsnvgre: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("ovsnvgre: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for users
            if debug:
                raise
            click.echo(f"ovsnvgre: internal error: {type(exc).__name__}: {exc} "
                       "(run with --debug for the traceback)", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def progress(as_json: bool) -> Callable[[str], None]:
    """A progress reporter: ``... message`` lines on stderr, none with --json."""

    def report(message: str) -> None:
        if not as_json:
            click.echo(f"... {message}", err=True)

    return report


class Seconds(click.ParamType):
    """A finite number of seconds, at least ``minimum`` (click.FloatRange lets NaN and
    infinity through, and a NaN deadline never comes)."""

    name = "seconds"

    def __init__(self, minimum: float) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        """The value as a float; fails with Click's usage error otherwise."""
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds < self.minimum:
            self.fail(f"{value!r} is not a number of seconds of at least {self.minimum:g}",
                      param, ctx)
        return seconds


config_option = click.option(
    "-c", "--config", "config", envvar=CONFIG_ENV, required=True,
    type=click.Path(dir_okay=False), metavar="FILE",
    help=f"The fabric file (YAML). Also read from ${CONFIG_ENV}.")
host_option = click.option(
    "--host", metavar="NAME",
    help="The fabric host this machine is. Default: the one host whose PA is configured "
         "here or whose name is this machine's hostname.")
db_option = click.option(
    "--db", metavar="REMOTE",
    help="The OVSDB remote, like unix:/run/openvswitch/db.sock or tcp:127.0.0.1:6640. "
         "Default: unix:$OVS_RUNDIR/db.sock ($OVS_RUNDIR defaults to /var/run/openvswitch).")
timeout_option = click.option(
    "--timeout", type=Seconds(0.1), default=30.0, show_default=True,
    metavar="SECONDS", help="How long to wait for ovs-vswitchd to apply the change.")
verbose_option = click.option("-v", "--verbose", is_flag=True,
                              help="List each flow added or deleted, not only counts per "
                                   "table.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the result as JSON for scripts.")
verify_option = click.option(
    "--verify/--no-verify", default=True, show_default=True,
    help="After changing the underlay, check that the host still reaches what it reached "
         "before (the gateways of the moved routes by ARP, the underlay.probe addresses) "
         "and, after `up`, the fabric's gateway; if not, restore the state before the run "
         "and exit 1.")
wait_option = click.option(
    "--wait", type=Seconds(0), default=60.0, show_default=True, metavar="SECONDS",
    help="How long to wait for another ovsnvgre run on this host (one changes it at a "
         "time) before giving up.")
confirm_option = click.option(
    "--confirm", "confirm", type=Seconds(1), metavar="SECONDS",
    help="After applying, wait this long for `ovsnvgre confirm` (from another shell); "
         "without it the whole run is rolled back, also if this process or its SSH session "
         "dies (a detached timer does it).")


def changing_command(func: F) -> F:
    """The options of the commands that change the switch, and clean failure."""
    for option in reversed((config_option, host_option, db_option, timeout_option,
                            wait_option, verify_option, confirm_option, verbose_option,
                            json_option)):
        func = option(func)
    return fail_cleanly(func)  # type: ignore[return-value]
