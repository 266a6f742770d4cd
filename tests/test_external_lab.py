"""`ovsnvgre lab` with external gateways (issue 19): examples/gateway.yaml built, its
outside proven by `lab check` (each VM's way out, the floating IP from outside, the
tenants apart with overlapping CAs, no CA reachable from outside), and `lab down`
removing the routing domains' namespaces too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import needs_switch

from ovsnvgre import fabric
from ovsnvgre.lab import outside, topology

EXAMPLE = Path(__file__).parent.parent / "examples" / "gateway.yaml"


def test_the_outside_as_data():
    fab = fabric.load(EXAMPLE)
    gateways = outside.gateways(fab)
    assert list(gateways) == [("host3", "eth2")]
    assert str(outside.server_address(gateways["host3", "eth2"])) == "203.0.113.100"
    assert outside.netns(topology.build(fab)) == "nv-gateway-outside"


def test_lab_up_check_down(tmp_path):
    needs_switch()
    name = f"gwl{os.getpid() % 10000}"
    path = tmp_path / "gateway.yaml"
    path.write_text(EXAMPLE.read_text().replace("fabric: gateway", f"fabric: {name}"))
    env = {**os.environ, "OVSNVGRE_LAB_DIR": str(tmp_path / "labs")}

    def lab(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ovsnvgre", "lab", *args, "-c", str(path)],
                              capture_output=True, text=True, env=env, timeout=600)

    try:
        up = lab("up")
        assert up.returncode == 0, up.stderr
        assert f"create namespace ovsnvgre-{name}-contoso" in up.stdout
        checked = lab("check", "--json")
        data = json.loads(checked.stdout)
        external = data["external"]
        assert external["ok"], external["failures"]
        # The rest of the lab's check holds with the gateways in place (routed, isolated,
        # every GRE key its destination's VSID).
        assert data["ok"] and checked.returncode == 0, [p for p in data["probes"] if not p["ok"]]
        lines = external["lines"]
        assert any("web-a reaches 203.0.113.100 over TCP seen as 203.0.113.21" in line
                   for line in lines)
        assert any("front-a seen as 203.0.113.11" in line for line in lines)
        assert any("does not reach front-a at 10.1.1.20" in line for line in lines)
        assert sum(line.startswith("ok") for line in lines) == len(lines) == 26
        again = lab("up")
        assert "[host3] host host3: no changes" in again.stdout, again.stdout
    finally:
        down = lab("down")
    assert down.returncode == 0, down.stderr
    left = [n for n in os.listdir("/run/netns") if name in n]
    assert left == []
