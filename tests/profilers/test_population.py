"""Client population files and the gen:N generator: units, defaults, ids, errors naming file/device/field."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import PlannerError
from planner.registry import resolve_hardware
from profilers.population import (ClientDevice, load_population, natural_key, parse_population,
                                  parse_rate, parse_size)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "clients.yaml"
    p.write_text(text)
    return p


def test_file_with_counts_defaults_and_explicit_ids(tmp_path: Path) -> None:
    p = _write(tmp_path, """
defaults: {link: 20mbps, memory: 4GiB}
devices:
  - {kind: jetson_orin_nano_8gb, count: 10, link: 50mbps, memory: 6GiB, samples: 200}
  - {id: phone-7, kind: phone_midrange_8gb, uplink: 5mbps, downlink: 20mbps}
  - {kind: raspberry_pi5_8gb, uplink: 1MB/s}
""")
    pop = load_population(p, resolve_hardware)
    assert len(pop) == 12
    ids = pop.ids
    assert ids == tuple(sorted(ids, key=natural_key))
    assert "jetson_orin_nano_8gb-0" in ids and "jetson_orin_nano_8gb-9" in ids
    assert ids.index("jetson_orin_nano_8gb-2") < ids.index("jetson_orin_nano_8gb-9")
    nano = next(d for d in pop.devices if d.id == "jetson_orin_nano_8gb-3")
    assert isinstance(nano, ClientDevice)
    assert nano.memory_bytes == 6 * 2**30 and nano.uplink_bits_per_s == 50e6 == nano.downlink_bits_per_s
    assert nano.samples == 200 and nano.hardware.name == "jetson_orin_nano_8gb"
    phone = next(d for d in pop.devices if d.id == "phone-7")
    assert (phone.uplink_bits_per_s, phone.downlink_bits_per_s) == (5e6, 20e6)
    assert phone.memory_bytes == 4 * 2**30 and phone.samples is None
    pi = next(d for d in pop.devices if d.id == "raspberry_pi5_8gb-0")
    # uplink from the entry (1 MB/s = 8 Mbit/s), downlink from defaults' link.
    assert (pi.uplink_bits_per_s, pi.downlink_bits_per_s) == (8e6, 20e6)
    # Same file, same population (and fingerprint).
    assert load_population(p, resolve_hardware) == pop
    assert load_population(p, resolve_hardware).fingerprint() == pop.fingerprint()


def test_hardware_defaults_fill_missing_fields(tmp_path: Path) -> None:
    pop = load_population(_write(tmp_path, "devices: [{kind: jetson_tx2_8gb}]"), resolve_hardware)
    (d,) = pop.devices
    hw = resolve_hardware("jetson_tx2_8gb")
    assert d.id == "jetson_tx2_8gb-0"
    assert (d.memory_bytes, d.uplink_bits_per_s, d.downlink_bits_per_s) == (hw.memory_bytes, hw.uplink_bits_per_s,
                                                                            hw.downlink_bits_per_s)


@pytest.mark.parametrize("text, words", [
    ("devices: [{kind: jetson_tx2_8gb, memory: 4}]", ["clients.yaml", "entry 1", "'memory'", "no unit", "GiB"]),
    ("devices: [{kind: jetson_tx2_8gb, link: 20}]", ["entry 1", "'link'", "no unit", "mbps"]),
    ("defaults: {link: 20}\ndevices: [{kind: jetson_tx2_8gb}]", ["defaults", "'link'", "no unit"]),
    ("devices: [{kind: jetson_tx2_8gb, memory: 4 apples}]", ["'memory'", "unknown unit 'apples'", "12GiB"]),
    ("devices: [{kind: jetson_tx2_8gb, memory: 0GiB}]", ["'memory'", "positive"]),
    ("devices: [{kind: jetson_tx2_8gb, uplink: -5mbps}]", ["'uplink'", "negative"]),
    ("devices: [{kind: jetson_tx2_8gb, count: 0}]", ["'count'", "at least 1"]),
    ("devices: [{kind: jetson_tx2_8gb, samples: -3}]", ["'samples'", "at least 1"]),
    ("devices: [{kind: jetson_tx2_8gb, memory: 64GiB}]", ["'memory'", "more than jetson_tx2_8gb has"]),
    ("devices: [{kind: jetson_tx2_8gb, ram: 4GiB}]", ["entry 1", "unknown field", "ram"]),
    ("devices: [{id: cam-1, kind: jetson_tx2_8gb, colour: red}]", ["device cam-1", "unknown field", "colour"]),
    ("devices: [{kind: jetson_nanoo}]", ["entry 1", "'kind'", "unknown hardware 'jetson_nanoo'", "Did you mean"]),
    ("devices: [{count: 2}]", ["entry 1", "'kind' is missing"]),
    ("devices: [{id: a, kind: jetson_tx2_8gb, count: 2}]", ["device a", "count is 2"]),
    ("devices: [{id: a, kind: jetson_tx2_8gb}, {id: a, kind: jetson_tx2_8gb}]", ["'a' appears twice"]),
    ("devices: []", ["'devices' is missing or empty"]),
    ("clients: []", ["unknown top-level field", "clients"]),
    ("defaults: {kind: x}\ndevices: [{kind: jetson_tx2_8gb}]", ["defaults", "unknown field", "kind"]),
    ("devices: [{kind: cpu_server_xeon}]", ["entry 1", "no uplink bandwidth"]),
    ("devices: [{kind: jetson_tx2_8gb", ["not valid YAML", "line"]),
])
def test_bad_files_raise_one_line_errors(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(PlannerError) as info:
        load_population(_write(tmp_path, text), resolve_hardware)
    msg = info.value.one_line()
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PlannerError, match="nope.yaml"):
        parse_population(str(tmp_path / "nope.yaml"), resolve_hardware)


def test_units() -> None:
    assert parse_size("512MiB", "x") == 512 * 2**20
    assert parse_size("1.5 GB", "x") == 1_500_000_000
    assert parse_rate("1.5Gbps", "x") == 1.5e9
    assert parse_rate("100kbit/s", "x") == 1e5
    assert parse_rate("2MB/s", "x") == 16e6
    with pytest.raises(PlannerError, match="no unit"):
        parse_size(4096, "f")
    with pytest.raises(PlannerError, match="unknown unit 'apples'"):
        parse_rate("20 apples", "f")


def test_generator_is_seeded_heterogeneous_and_sorted() -> None:
    a = parse_population("gen:200", resolve_hardware)
    assert a == parse_population("gen:200:0", resolve_hardware)
    assert a.source == "gen:200:0" and len(a) == 200
    b = parse_population("gen:200:1", resolve_hardware)
    assert a.fingerprint() != b.fingerprint()
    assert a.ids == tuple(sorted(a.ids, key=natural_key)) and len(set(a.ids)) == 200
    kinds = {d.kind for d in a.devices}
    assert len(kinds) >= 4
    mems = [d.memory_bytes for d in a.devices]
    speeds = [d.hardware.flops_per_s("fp16") for d in a.devices]
    assert max(mems) / min(mems) > 3 and max(speeds) / min(speeds) > 5
    for d in a.devices:
        assert 0 < d.memory_bytes <= resolve_hardware(d.kind).memory_bytes
        assert d.uplink_bits_per_s > 0 and d.downlink_bits_per_s > 0 and d.samples is None
        base = resolve_hardware(d.kind)
        assert d.hardware.peak_flops_per_s["fp32"] == pytest.approx(base.peak_flops_per_s["fp32"] * d.speed_factor)


@pytest.mark.parametrize("spec", ["gen:", "gen:x", "gen:10:a", "gen:0"])
def test_bad_generator_specs(spec: str) -> None:
    with pytest.raises(PlannerError, match="gen:"):
        parse_population(spec, resolve_hardware)
