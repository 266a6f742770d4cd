"""The command line through Click's CliRunner: exit codes, messages, help."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from fabrics import TWO_HOSTS

from ovsnvgre.cli import main


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def fabric_file(tmp_path):
    path = tmp_path / "fabric.yaml"
    path.write_text(TWO_HOSTS)
    return path


def test_validate_ok(runner, fabric_file):
    result = runner.invoke(main, ["validate", "-c", str(fabric_file)])
    assert result.exit_code == 0
    assert "fabric 'contoso' is valid: 2 hosts, 2 virtual subnets, 4 VMs" in result.output


def test_validate_json(runner, fabric_file):
    result = runner.invoke(main, ["validate", "-c", str(fabric_file), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["valid"] is True and data["vms"] == 4 and data["tunnel_ports"] == "per-vsid"


def test_validate_reads_the_config_from_the_environment(runner, fabric_file):
    result = runner.invoke(main, ["validate"], env={"OVSNVGRE_CONFIG": str(fabric_file)})
    assert result.exit_code == 0, result.output


def test_bad_fabric_is_one_line_and_exit_2(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TWO_HOSTS.replace('"02:00:00:00:60:02"', '"ff:ff:ff:ff:ff:ff"'))
    result = runner.invoke(main, ["validate", "-c", str(bad)])
    assert result.exit_code == 2
    assert result.output == (f"ovsnvgre: error: {bad}:15: vms.blue-b.mac: ff:ff:ff:ff:ff:ff is "
                             "a multicast MAC; a VM needs a unicast one\n")


def test_missing_file_is_exit_2(runner, tmp_path):
    result = runner.invoke(main, ["validate", "-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_missing_config_option_is_a_usage_error(runner):
    result = runner.invoke(main, ["up"], env={"OVSNVGRE_CONFIG": None})
    assert result.exit_code == 2
    assert "Missing option '-c' / '--config'" in result.output


def test_unknown_host_is_exit_2_before_touching_any_switch(runner, fabric_file, tmp_path):
    result = runner.invoke(main, ["up", "-c", str(fabric_file), "--host", "nohost",
                                  "--db", f"unix:{tmp_path}/absent.sock"])
    assert result.exit_code == 2
    assert "no host 'nohost' in the fabric (hosts: host1, host2)" in result.output


def test_debug_shows_the_traceback(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fabric: x\n")
    result = runner.invoke(main, ["--debug", "validate", "-c", str(bad)])
    assert result.exit_code != 0
    assert result.exception is not None and "hosts" in str(result.exception)


@pytest.mark.parametrize("command", ["validate", "plan", "up", "down"])
def test_every_command_has_help(runner, command):
    result = runner.invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "--config" in result.output
    if command != "validate":
        assert "--host" in result.output and "--db" in result.output
        assert "OVS_RUNDIR" in result.output


def test_help_names_the_exit_statuses(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "2 a bad fabric" in result.output.replace("\n", " ").replace("  ", " ")


def test_validate_warns_when_vm_mtu_does_not_fit_the_underlay(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(TWO_HOSTS.replace("tunnel_ports: per-vsid",
                                      "tunnel_ports: per-vsid, vm_mtu: 1500"))
    result = CliRunner().invoke(main, ["validate", "-c", str(path)])
    assert result.exit_code == 0
    assert "warning: overlay.vm_mtu 1500 is more than underlay.mtu 1500 - 42 = 1458" \
        in result.stderr
    as_json = CliRunner().invoke(main, ["validate", "-c", str(path), "--json"])
    assert json.loads(as_json.stdout)["warnings"] == [
        "overlay.vm_mtu 1500 is more than underlay.mtu 1500 - 42 = 1458: frames that large "
        "will not cross the tunnels"]
    fits = tmp_path / "fits.yaml"
    fits.write_text(path.read_text().replace("underlay: {bridge: br0, tep_port: tep0}",
                                             "underlay: {bridge: br0, tep_port: tep0, "
                                             "mtu: 9000}"))
    quiet = CliRunner().invoke(main, ["validate", "-c", str(fits)])
    assert quiet.exit_code == 0 and quiet.stderr == ""


@pytest.mark.parametrize("overlay, message", [
    ("bfd: yes please", "overlay.bfd: str 'yes please' is not true or false"),
    ("vm_mtu: 40", "overlay.vm_mtu: 40 is outside 68-65493"),
    ("vm_mtu: '1400'", "overlay.vm_mtu: str '1400' is not an integer"),
])
def test_bad_overlay_options_are_one_line_errors(runner, tmp_path, overlay, message):
    path = tmp_path / "bad.yaml"
    path.write_text(TWO_HOSTS.replace("tunnel_ports: per-vsid", f"tunnel_ports: per-vsid, "
                                      f"{overlay}"))
    result = runner.invoke(main, ["validate", "-c", str(path)])
    assert result.exit_code == 2
    assert result.output == f"ovsnvgre: error: {path}:4: {message}\n"


def test_readme_cli_reference_is_the_help_of_every_command():
    from pathlib import Path

    from ovsnvgre import clidoc

    readme = Path(__file__).parent.parent / "README.md"
    text = readme.read_text()
    assert clidoc.replace_in(text) == text, \
        "README's CLI reference is stale: run `python -m ovsnvgre.clidoc README.md`"
    for command in ("up", "down", "status", "trace", "rollback", "confirm", "lab check"):
        assert f"### `ovsnvgre {command}`" in text


# --- the installed command: its exit status and output survive the quick exit ------


def _command(*args, **kwargs):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ovsnvgre", *args], capture_output=True,
                          text=True, **kwargs)


def test_the_command_exits_with_its_status_and_all_its_output(fabric_file, tmp_path):
    ok = _command("validate", "-c", str(fabric_file), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["vms"] == 4  # the whole document, flushed
    missing = _command("validate", "-c", str(tmp_path / "nowhere.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"ovsnvgre: error: {tmp_path / 'nowhere.yaml'}: no such file"
    usage = _command("no-such-command")
    assert usage.returncode == 2 and "No such command" in usage.stderr


def test_a_reader_that_goes_away_is_an_error_not_a_traceback(fabric_file):
    import subprocess
    import sys

    # `ovsnvgre ... --help | true`: the pipe is closed before ovsnvgre writes.
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait()
    result = subprocess.run([sys.executable, "-m", "ovsnvgre", "--help"],
                            stdout=reader.stdin, stderr=subprocess.PIPE, text=True)
    reader.stdin.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_the_root_help_lists_every_command_as_the_commands_themselves_would():
    """`ovsnvgre --help` is written without importing the commands: its summaries must be
    the commands' own, and every command of commands.py and the lab group listed."""
    import click

    from ovsnvgre import cli, commands
    from ovsnvgre.lab import cli as lab_cli

    defined = {c.name: c for c in vars(commands).values() if isinstance(c, click.Command)}
    defined["lab"] = lab_cli.lab
    context = click.Context(main, info_name="ovsnvgre")
    assert {name: main.get_command(context, name) for name in cli.SUBCOMMANDS} == defined
    for name, (_, summary) in cli.SUBCOMMANDS.items():
        for limit in (20, 45, 80, 200):
            assert click.Command(name, help=summary).get_short_help_str(limit) == \
                defined[name].get_short_help_str(limit), name
    eager = click.Group("ovsnvgre", commands=defined, params=main.params, help=main.help,
                        context_settings=main.context_settings)
    runner = CliRunner()
    assert runner.invoke(main, ["--help"], prog_name="ovsnvgre").output == \
        runner.invoke(eager, ["--help"], prog_name="ovsnvgre").output


def test_help_imports_no_command():
    import subprocess
    import sys

    code = ("import sys; from ovsnvgre.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('ovsnvgre')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "['ovsnvgre', 'ovsnvgre.cli']"


def test_changing_commands_refuse_another_machines_switch(runner, fabric_file):
    """`up` would move this machine's uplink while writing rows to another switch."""
    for command in ("up", "down", "watch"):
        result = runner.invoke(main, [command, "-c", str(fabric_file), "--host", "host1",
                                      "--db", "tcp:192.0.2.7:6640"])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("ovsnvgre: error: --db tcp:192.0.2.7:6640 is not "
                                        "this machine's switch")
        assert len(result.output.strip().splitlines()) == 1


def test_the_local_switch_over_tcp_is_this_machines(runner, fabric_file):
    from ovsnvgre.engine import require_local

    require_local("unix:/run/openvswitch/db.sock")
    require_local("tcp:127.0.0.1:6640")
    require_local("tcp:[::1]:6640")


HOSTNAME_PICK = """
import sys
from ovsnvgre import fabric, survey
from ovsnvgre.errors import UsageError
loaded = fabric.load(sys.argv[1])
try:
    print(survey.select_host(loaded, None))
except UsageError as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize(("hostname", "expected"), [
    ("host2", "host2"),
    ("host1.rack4.example", "host1"),
    ("nobody", "refused: "),
])
def test_the_host_is_found_by_this_machines_hostname(tmp_path, hostname, expected):
    """Without --host and with no PA configured here (a new network namespace has none),
    the host whose name is this machine's hostname (or its first label) is the one."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private hostname and network")
    path = tmp_path / "fabric.yaml"
    path.write_text(TWO_HOSTS)
    script = tmp_path / "pick.py"
    script.write_text(HOSTNAME_PICK)
    result = subprocess.run(
        ["unshare", "--uts", "--net", "--", sys.executable, "-I", "-c",
         f"import socket; socket.sethostname({hostname!r}); "
         f"exec(open({str(script)!r}).read())", str(path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(expected), result.stdout
    if expected.startswith("refused"):
        assert f"hostname {hostname!r} not listed" in result.stdout
