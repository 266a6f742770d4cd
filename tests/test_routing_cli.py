"""validate shows the routing domains, as text and as JSON (tests/json_contract.py)."""

from __future__ import annotations

import json

import jsonschema
from click.testing import CliRunner
from fabrics import ROUTED, TWO_HOSTS
from json_contract import VALIDATE

from ovsnvgre.cli import main


def validate(tmp_path, text: str, *extra: str):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["validate", "-c", str(path), *extra])
    assert result.exit_code == 0, result.output
    return result


def test_validate_names_the_routing_domains_and_their_subnets(tmp_path):
    result = validate(tmp_path, ROUTED)
    assert ("fabric 'routed' is valid: 2 hosts, 6 virtual subnets, 7 VMs, 2 routing domains "
            "(contoso: web, db, app, fabrikam: other, data)") in result.output


def test_validate_json_lists_domains_subnets_gateways_and_vms(tmp_path):
    data = json.loads(validate(tmp_path, ROUTED, "--json").stdout)
    jsonschema.validate(data, VALIDATE)
    assert data["router_mac"] == "02:00:5e:00:01:01"
    contoso, fabrikam = data["routing_domains"]
    assert contoso["name"] == "contoso" and fabrikam["name"] == "fabrikam"
    assert contoso["subnets"][1] == {"name": "db", "vsid": 5002, "prefix": "10.1.2.0/24",
                                     "gateway": "10.1.2.1", "vms": ["db-a", "db-b"]}
    assert [s["name"] for s in fabrikam["subnets"]] == ["other", "data"]


def test_a_fabric_without_domains_says_nothing_new(tmp_path):
    assert "routing domain" not in validate(tmp_path, TWO_HOSTS).output
    data = json.loads(validate(tmp_path, TWO_HOSTS, "--json").stdout)
    assert data["routing_domains"] == []
