"""Every command's --json output on a real switch holds the keys tests/json_contract.py
promises to scripts."""

from __future__ import annotations

import json

import jsonschema
import pytest
from click.testing import CliRunner
from fabrics import TWO_HOSTS
from json_contract import PLAN, RUN, STATUS, TRACE, VALIDATE

from ovsnvgre.cli import main


def valid(output: str, schema: dict) -> dict:
    data = json.loads(output)
    jsonschema.validate(data, schema)
    return data


def test_validate_json(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(TWO_HOSTS)
    result = CliRunner().invoke(main, ["validate", "-c", str(path), "--json"])
    assert result.exit_code == 0
    valid(result.stdout, VALIDATE)


def test_a_missing_key_fails_the_contract():
    with pytest.raises(jsonschema.ValidationError, match="'blockers' is a required property"):
        jsonschema.validate({"host": "h", "changes": [], "notes": [], "ovsdb_changes": 0,
                             "kernel_changes": 0, "flow_changes": {"add": 0, "delete": 0,
                                                                   "per_table": {},
                                                                   "flows": []}}, PLAN)


def test_every_changing_and_reading_command_keeps_its_keys(host1):
    plan = host1.ovsnvgre("plan", "--json")
    assert valid(plan.stdout, PLAN)["ovsdb_changes"] > 0
    up = host1.ovsnvgre("up", "--json")
    assert up.returncode == 0, up.stderr
    assert valid(up.stdout, RUN)["underlay_check"] is not None
    status = host1.ovsnvgre("status", "--json")
    assert status.returncode == 0, status.stderr
    assert valid(status.stdout, STATUS)["converged"] is True
    trace = host1.switch.ovsnvgre("trace", "-c", str(host1.fabric), "--from", "red-a", "--to",
                                  "red-b", "--json")
    assert trace.returncode == 0, trace.stderr
    valid(trace.stdout, TRACE)
    down = host1.ovsnvgre("down", "--json")
    assert down.returncode == 0, down.stderr
    assert valid(down.stdout, RUN)["changed"] is True
