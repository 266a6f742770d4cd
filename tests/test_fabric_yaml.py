"""YAML 1.1's implicit types in every string-typed field of a fabric, one shape at a time.

An unquoted word that YAML 1.1 reads as another type (a base-60 integer from a MAC
or a time, a boolean from yes/no/on/off, an octal number, null, a float, a date)
is either taken as written (a MAC-shaped word in `mac`, an address in an address
field) or refused in one line that quotes it as written - never shown as the value
YAML made of it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from fabrics import TWO_HOSTS

from ovsnvgre import fabric, fabric_yaml
from ovsnvgre.errors import FabricError
from ovsnvgre.fabric import PORT_NAME_RE
from ovsnvgre.fabric_checks import NAME_RE
from ovsnvgre.fabric_yaml import LineList, LineMap

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from fabric_gen import generate  # noqa: E402

TEMPLATE = """\
fabric: {fabric}
underlay: {{bridge: {ubridge}, tep_port: {tep}, probe: [{probe}], mtu: {mtu}}}
overlay: {{bridge: {obridge}, bfd: {bfd}, vm_mtu: {vm_mtu}}}
hosts:
  {host}: {{pa: {pa}, uplink: {uplink}, gateway: {gateway}}}
  other: {{pa: 192.168.2.11/24}}
virtual_subnets:
  {subnet}: {{vsid: {vsid}}}
vms:
  {vm}: {{host: {vm_host}, subnet: {vm_subnet}, port: {port}, mac: {mac}, ca: {ca}}}
"""

DEFAULTS = {
    "fabric": "f", "ubridge": "br0", "tep": "tep0", "probe": "192.168.1.1", "mtu": "1500",
    "obridge": "br-int", "bfd": "false", "vm_mtu": "1400", "host": "h1", "pa": "192.168.1.11/24",
    "uplink": "eth1", "gateway": "192.168.1.1", "subnet": "red", "vsid": "5001", "vm": "vm1",
    "vm_host": "h1", "vm_subnet": "red", "port": "vnet0", "mac": '"02:00:00:00:00:01"',
    "ca": "10.0.0.1/24",
}

# What a user may write unquoted, and what YAML 1.1 makes of it.
SHAPES = {
    "base-60 MAC": "52:54:00:12:34:56",   # int 41135085296
    "base-60 time": "12:30",              # int 750
    "base-60 float": "1:30.5",            # float 5430.5
    "yes": "yes", "no": "no", "on": "on", "Off": "Off", "true": "true", "FALSE": "FALSE",
    "octal": "0755",                      # int 493
    "hexadecimal": "0x1f",                # int 31
    "binary": "0b101",                    # int 5
    "underscored": "1_000",               # int 1000
    "tilde": "~", "null": "null",         # None
    "exponent": "1.5e+3",                 # float 1500.0
    "decimal point": "1.0",               # float 1.0
    "infinity": ".inf",                   # float inf
    "date": "2024-01-01",                 # datetime.date
    "timestamp": "2001-12-14t21:59:43.10-05:00",  # datetime.datetime
    "value tag": "=",                     # YAML 1.1's "value" tag, which SafeLoader cannot build
}

# Each string-typed field: its placeholder, the placeholder that must name the same
# thing (written quoted, when it can be), and the path its error names.
NAMES = {
    "fabric": ("fabric", None, "fabric"),
    "underlay.bridge": ("ubridge", None, "underlay.bridge"),
    "underlay.tep_port": ("tep", None, "underlay.tep_port"),
    "overlay.bridge": ("obridge", None, "overlay.bridge"),
    "a host's name": ("host", "vm_host", "hosts."),
    "hosts.*.uplink": ("uplink", None, "hosts.h1.uplink"),
    "a virtual subnet's name": ("subnet", "vm_subnet", "virtual_subnets."),
    "a VM's name": ("vm", None, "vms."),
    "vms.*.host": ("vm_host", "host", "vms.vm1.host"),
    "vms.*.subnet": ("vm_subnet", "subnet", "vms.vm1.subnet"),
    "vms.*.port": ("port", None, "vms.vm1.port"),
}
INTERFACES = {"underlay.bridge", "underlay.tep_port", "overlay.bridge", "hosts.*.uplink",
              "vms.*.port"}  # interface names: PORT_NAME_RE, which also allows a leading '.'
ADDRESSES = {  # each takes the text as written and parses it as its kind
    "vms.*.mac": ("mac", "vms.vm1.mac", "a MAC address"),
    "vms.*.ca": ("ca", "vms.vm1.ca", "an address with a prefix length"),
    "hosts.*.pa": ("pa", "hosts.h1.pa", "an IPv4 address with a prefix length"),
    "hosts.*.gateway": ("gateway", "hosts.h1.gateway", "an IPv4 address"),
    "underlay.probe": ("probe", "underlay.probe[0]", "an IPv4 address"),
}
# The old messages showed YAML's reading as if the user had written it.
CONVERTED = re.compile(r"\b(int|float|bool|NoneType|date|datetime) ")


def fabric_text(**changes: str) -> str:
    return TEMPLATE.format(**{**DEFAULTS, **changes})


def line_of(placeholder: str) -> int:
    return next(number for number, line in enumerate(TEMPLATE.splitlines(), 1)
                if "{" + placeholder + "}" in line)


def refused(text: str) -> str:
    with pytest.raises(FabricError) as info:
        fabric.loads(text, "f.yaml")
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 2
    assert not CONVERTED.search(message), message
    return message


def test_the_template_loads():
    fab = fabric.loads(fabric_text(), "f.yaml")
    assert fab.vms["vm1"].port == "vnet0" and fab.overlay.vm_mtu == 1400


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("field", NAMES.keys())
def test_a_name_yaml_reads_as_another_type_is_quoted_as_written(field, shape):
    placeholder, partner, path = NAMES[field]
    pattern = PORT_NAME_RE if field in INTERFACES else NAME_RE
    named = {partner: f'"{shape}"'} if partner and pattern.match(shape) else {}
    message = refused(fabric_text(**{placeholder: shape, **named}))
    assert message.startswith(f"f.yaml:{line_of(placeholder)}: {path}"), message
    assert shape in message, message
    if not pattern.match(shape):  # not a name even when quoted: the name rule says so
        assert "write it in quotes" not in message
        return
    assert f'YAML 1.1 reads the unquoted {"name " if path.endswith(".") else ""}{shape} as ' \
        in message, message
    assert message.endswith(f'; write it in quotes: "{shape}"'), message
    # The advice works: quoted, it is that name.
    quoted = fabric.loads(fabric_text(**{placeholder: f'"{shape}"', **named}), "f.yaml")
    names = {"fabric": quoted.name, "underlay.bridge": quoted.underlay.bridge,
             "underlay.tep_port": quoted.underlay.tep_port,
             "overlay.bridge": quoted.overlay.bridge, "a host's name": [*quoted.hosts][0],
             "hosts.*.uplink": [*quoted.hosts.values()][0].uplink,
             "a virtual subnet's name": [*quoted.virtual_subnets][0],
             "a VM's name": [*quoted.vms][0], "vms.*.host": [*quoted.vms.values()][0].host,
             "vms.*.subnet": [*quoted.vms.values()][0].virtual_subnet,
             "vms.*.port": [*quoted.vms.values()][0].port}
    assert names[field] == shape


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("field", ADDRESSES.keys())
def test_an_address_yaml_reads_as_another_type_is_taken_as_written(field, shape):
    placeholder, path, what = ADDRESSES[field]
    text = fabric_text(**{placeholder: shape})
    if field == "vms.*.mac" and shape == "52:54:00:12:34:56":
        assert fabric.loads(text, "f.yaml").vms["vm1"].mac == shape  # a MAC, as written
        return
    message = refused(text)
    assert message == f"f.yaml:{line_of(placeholder)}: {path}: {shape!r} is not {what}" + (
        " (six hex pairs like 02:00:00:00:50:01)" if field == "vms.*.mac" else
        " (like 10.0.0.1/24)" if field == "vms.*.ca" else
        " (like 192.168.1.11/24)" if field == "hosts.*.pa" else ""), message


def test_the_mac_of_the_issue():
    """52:54:00:12:34:56 unquoted is YAML 1.1's 41135085296: it is the MAC as written, and a
    MAC-like word that is no MAC is quoted as written."""
    assert fabric.loads(fabric_text(mac="52:54:00:12:34:56"), "f.yaml").vms["vm1"].mac == \
        "52:54:00:12:34:56"
    assert fabric.loads(fabric_text(mac="52:54:0A:12:34:56"), "f.yaml").vms["vm1"].mac == \
        "52:54:0a:12:34:56"
    message = refused(fabric_text(mac="52:54:00:12:34"))
    assert message.startswith("f.yaml:10: vms.vm1.mac: '52:54:00:12:34' is not a MAC address")
    assert "41135085296" not in message and "188897074" not in message


@pytest.mark.parametrize("placeholder,path", [("vsid", "virtual_subnets.red.vsid"),
                                              ("mtu", "underlay.mtu"),
                                              ("vm_mtu", "overlay.vm_mtu")])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_an_integer_field_takes_only_unambiguous_numbers(placeholder, path, shape):
    if shape in ("0x1f", "0b101", "1_000"):  # explicit bases, underscores: that number
        try:
            fab = fabric.loads(fabric_text(**{placeholder: shape}), "f.yaml")
        except FabricError as error:
            assert f"{path}: {int(shape, 0)} is outside" in str(error)
        else:
            assert {"vsid": fab.virtual_subnets["red"].vsid, "mtu": fab.underlay.mtu,
                    "vm_mtu": fab.overlay.vm_mtu}[placeholder] == int(shape, 0)
        return
    message = refused(fabric_text(**{placeholder: shape}))
    assert message.startswith(f"f.yaml:{line_of(placeholder)}: {path}: "), message
    assert shape in message, message
    if shape in ("52:54:00:12:34:56", "12:30", "0755"):
        assert message.endswith("; write the number in decimal, without leading zeros")
        assert "(base 60)" in message or "(octal)" in message
    else:
        assert "is not an integer" in message


@pytest.mark.parametrize("written,value", [("0x1389", 5001), ("5_001", 5001),
                                           ("0b1001110001001", 5001), ("+5001", 5001)])
def test_integers_in_explicit_bases_are_taken(written, value):
    assert fabric.loads(fabric_text(vsid=written), "f.yaml").virtual_subnets["red"].vsid == value


def test_an_octal_looking_vsid_is_refused_not_read_as_octal():
    message = refused(fabric_text(vsid="011610"))  # 5000 in octal, 11610 meant
    assert message == ("f.yaml:8: virtual_subnets.red.vsid: YAML 1.1 reads the unquoted 011610 "
                       "as the integer 5000 (octal); write the number in decimal, without "
                       "leading zeros")


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_bfd_takes_yaml_booleans_and_quotes_anything_else(shape):
    text = fabric_text(bfd=shape)
    if shape.lower() in ("yes", "no", "on", "off", "true", "false"):
        assert fabric.loads(text, "f.yaml").overlay.bfd is (shape.lower() in ("yes", "on",
                                                                              "true"))
        return
    message = refused(text)
    assert message.startswith(f"f.yaml:3: overlay.bfd: {shape} is not true or false") or \
        message.startswith(f"f.yaml:3: overlay.bfd: str {shape!r} is not true"), message


def test_a_section_yaml_reads_as_another_type_is_quoted_as_written():
    message = refused("fabric: f\nunderlay: 12:30\nhosts: {h: {pa: 192.168.1.1/24}}\n")
    assert message == "f.yaml:2: underlay: must be a mapping, not 12:30"
    message = refused("fabric: f\nhosts:\n  on: 0755\n")
    assert message.startswith("f.yaml:3: hosts.on: YAML 1.1 reads the unquoted name on as "
                              "boolean true"), message


def test_names_yaml_would_merge_are_two_names():
    """`yes` and `on` are both true to YAML 1.1; as written they are two hosts' names,
    and the first is refused as unquoted, not as a duplicate of the second."""
    message = refused("fabric: f\nhosts:\n  yes: {pa: 192.168.1.1/24}\n"
                      "  on: {pa: 192.168.1.2/24}\n")
    assert message.startswith("f.yaml:3: hosts.yes: YAML 1.1 reads"), message
    fab = fabric.loads('fabric: f\nhosts:\n  "yes": {pa: 192.168.1.1/24}\n'
                       '  "on": {pa: 192.168.1.2/24}\n', "f.yaml")
    assert [*fab.hosts] == ["yes", "on"]


# --- the event builder against PyYAML's constructor ----------------------------------
# fabric_yaml builds LineMaps from libyaml's events (fast) and leaves tags, anchors,
# aliases, merge keys and second documents to PyYAML's constructor (as before): both
# must give the same values, texts, readings and lines, and the same errors.

EDGE_DOCUMENTS = [
    "", "# only a comment\n", "---\n", "---\n...\n", "~\n", "null\n", "5\n", "yes\n",
    "just a string\n", "- a\n- b\n", "[]\n", "{}\n", "a: {}\nb: []\n",
    "a: 1\na: 2\n", "a: 1\n'a': 2\n", "1: x\n'1': y\n", "yes: 1\non: 2\n",
    'yes: 1\n"yes": 2\n', "a: {b: 1, b: 2}\nc: {d: 1, d: 2}\n", "a: {b: 1}\na: 2\n",
    "? [a, b]\n: x\n", "? {a: 1}\n: x\n", "{[a]: 1}\n", "a: 1\n? [x]\n: 2\na: 3\n",
    "a: 1\na: 2\nb: [unclosed\n", "a: 1\nb: [unclosed\n",
    "a: &x 1\nb: *x\n", "a: &x 1\nb: 2\n", "a: &x 1\nb: &x 2\n", "a: *nope\n",
    "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n", "<<: {a: 1}\n", "a: <<\n", "x: &a [1, *a]\n",
    "a: !!int '5'\n", "a: !!str 5\n", "a: ! 5\n", "a: !foo x\n", "!!map {a: 1}\n",
    "a: !!binary aGk=\n", "a: !!set {x, y}\n",
    "a: |\n  x\n  y\nb: >\n  p\n  q\nc: |-\n  z\n", "a: 'it''s'\nb: \"\\x41\\u00e9\\n\"\n",
    "a: =\n=: b\n", "a:\nb: ~\nc: null\nd: Null\ne: NULL\nf: ''\n", "? \n: x\n", "{: x}\n",
    "a: [1, '2', yes, ~, '', \"\"]\n", "a: 1\n---\nb: 2\n", "--- a\n--- b\n",
    "%YAML 1.1\n---\na: 1\n", "\ufeffa: 1\n", "a: 1\r\nb: 2\r\n", "a:\tb\n", "\ta: 1\n",
    "a: 2001-12-14t21:59:43.10-05:00\nb: 2024-01-01\nc: 1:30.5\nd: .inf\ne: -.inf\n"
    "f: .NaN\ng: 0b101\nh: 0x1f\ni: 0755\nj: 1_000\nk: +5\nl: -0\nm: 190:20:30\n",
    "2024-01-01: a\n1:30: b\n.inf: c\n~: d\nnull: e\nTrue: f\n0x1f: g\n=: h\n",
    "a: [a, [b, [c, {d: e}]]]\n- x\n", "a: [a, [b, [c, {d: e}]]]\n", "- {a: 1}\n- [x, y]\n",
    "a: b: c\n", "a: 'unclosed\n", "a: 1\n  b: 2\n", "- a\nb: 1\n", "a: 1 # comment\n",
    "vms:\n  v1:\n    mac: 52:54:00:12:34:56\n    port: on\n    ca: 10.0.0.1/24\n",
]


def _shape(value):
    """Everything parse() says about a value, comparable with ==."""
    if isinstance(value, LineMap):
        return ("map", value.line, [(key, _shape(item)) for key, item in value.items()],
                value.key_lines, value.texts, {k: repr(v) for k, v in value.readings.items()})
    if isinstance(value, LineList):
        return ("list", [_shape(item) for item in value], value.texts)
    return (type(value).__name__, repr(value))


def _outcome(text: str, events: bool):
    try:
        return _shape(fabric_yaml._read(text, events))
    except fabric_yaml.DocumentError as error:
        return ("error", error.line, error.message)


def _fabrics():
    yield TWO_HOSTS
    yield generate(6, vsids=3, local_vms=4, vms_per_peer=3, shared_per_peer=2)
    for path in sorted(ROOT.glob("examples/*.yaml")) + sorted(ROOT.glob("ovsnvgre/lab/*.yaml")):
        yield path.read_text()
    for shape in SHAPES.values():
        for placeholder in DEFAULTS:
            yield fabric_text(**{placeholder: shape})
            yield f"{shape}: x\n{shape}: y\n"


def test_the_event_builder_gives_what_the_constructor_gives():
    documents = EDGE_DOCUMENTS + list(_fabrics())
    assert len(documents) > 400
    for text in documents:
        assert _outcome(text, events=True) == _outcome(text, events=False), text


def test_fabric_files_are_built_from_events():
    """Only tags, anchors, aliases, merge keys and second documents need PyYAML's
    constructor: every fabric-shaped file, whatever YAML 1.1 makes of its words, is
    built from the events (the fast path is the one taken)."""
    for text in _fabrics():
        try:
            fabric_yaml._Builder(text).document()
        except fabric_yaml.DocumentError:
            pass
        except fabric_yaml._Fallback:
            pytest.fail(f"fell back to the constructor: {text}")
    for text in ("a: &x 1\n", "a: *x\n", "a: !!str 1\n", "<<: {a: 1}\n", "a\n--- b\n"):
        with pytest.raises(fabric_yaml._Fallback):
            fabric_yaml._Builder(text).document()


def test_an_error_deep_in_a_large_fabric_names_its_line():
    text = generate(50, vsids=5, local_vms=10, vms_per_peer=20, shared_per_peer=3)
    lines = text.splitlines()
    number = len(lines) - 7  # a VM near the end
    name = lines[number - 1].split(":")[0].strip()
    lines[number - 1] = lines[number - 1].replace("mac: \"02:", "mac: \"03:")
    message = refused("\n".join(lines) + "\n")
    assert message.startswith(f"f.yaml:{number}: vms.{name}.mac: 03:") and "multicast" in message
    lines[number - 1] = lines[number - 1] + "\n  " + name + ": {}"
    message = refused("\n".join(lines) + "\n")
    assert message.startswith(f"f.yaml:{number + 1}: duplicate key '{name}' (first on line "
                              f"{number})"), message
