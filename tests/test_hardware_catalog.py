"""The hardware catalog: every YAML in planner/catalog/hardware loads and is self-consistent."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from profilers.hardware import GIB, HardwareProfile, profile_from_dict

CATALOG = Path(__file__).resolve().parents[1] / "planner" / "catalog" / "hardware"

REQUIRED = {
    "a100_80gb",
    "a100_40gb",
    "a100_24gb",
    "h100_80gb",
    "rtx4090_24gb",
    "rtx3090_24gb",
    "l4_24gb",
    "t4_16gb",
    "jetson_orin_nano_8gb",
    "jetson_agx_orin_32gb",
    "jetson_tx2_8gb",
    "raspberry_pi5_8gb",
    "phone_midrange_8gb",
    "cpu_server_xeon",
}

GPU_KINDS = {"datacenter_gpu", "consumer_gpu", "edge_gpu"}
DISCRETE_GPU_KINDS = {"datacenter_gpu", "consumer_gpu"}
EDGE_KINDS = {"edge_gpu", "edge_cpu", "phone"}
DTYPES = {"fp32", "tf32", "fp16", "bf16", "int8"}

PATHS = sorted(CATALOG.glob("*.yaml"))


def _load(path: Path) -> HardwareProfile:
    with path.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict), f"{path}: top level is not a mapping"
    return profile_from_dict(data, str(path))


@pytest.fixture(scope="module")
def catalog() -> dict[str, HardwareProfile]:
    return {p.stem: _load(p) for p in PATHS}


def test_required_entries_exist():
    assert REQUIRED <= {p.stem for p in PATHS}, sorted(REQUIRED - {p.stem for p in PATHS})


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_entry_loads_and_is_sane(path: Path):
    with path.open() as f:
        raw = yaml.safe_load(f)
    hw = profile_from_dict(raw, str(path))
    assert hw.name == path.stem
    assert hw.memory_bytes > 0
    assert isinstance(raw["memory_bytes"], int), "memory_bytes must be an integer"
    assert hw.memory_bandwidth_bytes_per_s > 0
    assert hw.source.strip()
    assert hw.measured is False
    assert hw.peak_flops_per_s, "no FLOP/s figures"
    assert set(hw.peak_flops_per_s) <= DTYPES, sorted(set(hw.peak_flops_per_s) - DTYPES)
    assert all(v > 0 for v in hw.peak_flops_per_s.values())
    # Numbers must come out of YAML as numbers, not strings like "2.039e12".
    for key in ("memory_bandwidth_bytes_per_s", "host_to_device_bytes_per_s", "device_to_host_bytes_per_s",
                "uplink_bits_per_s", "downlink_bits_per_s"):
        assert raw.get(key) is None or isinstance(raw[key], (int, float)), f"{key} is not numeric in YAML"
    assert all(isinstance(v, (int, float)) for v in raw["peak_flops_per_s"].values())
    assert 0 < hw.efficiency_compute <= 1
    assert 0 < hw.efficiency_memory <= 1
    hw.flops_per_s("fp32")  # every entry resolves fp32 (directly or by fallback)


def test_edge_and_phone_have_network_links(catalog):
    for name, hw in catalog.items():
        if hw.kind in EDGE_KINDS:
            assert hw.uplink_bits_per_s, f"{name} has no uplink_bits_per_s"
            assert hw.downlink_bits_per_s, f"{name} has no downlink_bits_per_s"
            assert hw.unified_memory, f"{name} should be unified-memory"


def test_discrete_gpus_have_host_link(catalog):
    for name, hw in catalog.items():
        if hw.kind in DISCRETE_GPU_KINDS:
            assert hw.host_to_device_bytes_per_s, f"{name} has no host_to_device_bytes_per_s"
            assert hw.device_to_host_bytes_per_s, f"{name} has no device_to_host_bytes_per_s"
            assert hw.host_link, f"{name} has no host_link"
            assert not hw.unified_memory
            # A host link is far slower than device memory.
            assert hw.host_to_device_bytes_per_s < hw.memory_bandwidth_bytes_per_s


def test_unified_memory_entries_have_no_copy_figures(catalog):
    for name, hw in catalog.items():
        if hw.unified_memory:
            assert hw.host_to_device_bytes_per_s is None, name
            assert hw.device_to_host_bytes_per_s is None, name


def test_a100_24gb_is_capped_a100_80gb(catalog):
    capped, full = catalog["a100_24gb"], catalog["a100_80gb"]
    assert capped.memory_bytes == 24 * GIB
    assert capped.base == "a100_80gb"
    assert capped.memory_bandwidth_bytes_per_s == full.memory_bandwidth_bytes_per_s
    assert dict(capped.peak_flops_per_s) == dict(full.peak_flops_per_s)
    assert capped.host_to_device_bytes_per_s == full.host_to_device_bytes_per_s
    assert capped.device_to_host_bytes_per_s == full.device_to_host_bytes_per_s
    assert capped.kind == full.kind


def test_gpu_fp16_at_least_fp32(catalog):
    for name, hw in catalog.items():
        if hw.kind in GPU_KINDS:
            flops = hw.peak_flops_per_s
            assert "fp16" in flops and "fp32" in flops, name
            assert flops["fp16"] >= flops["fp32"], name


def test_marketing_memory_sizes(catalog):
    expected_gib = {
        "a100_80gb": 80, "a100_40gb": 40, "h100_80gb": 80, "rtx4090_24gb": 24, "rtx3090_24gb": 24,
        "l4_24gb": 24, "t4_16gb": 16, "jetson_orin_nano_8gb": 8, "jetson_agx_orin_32gb": 32,
        "jetson_tx2_8gb": 8, "raspberry_pi5_8gb": 8, "phone_midrange_8gb": 8,
    }
    for name, gib in expected_gib.items():
        assert catalog[name].memory_bytes == gib * GIB, name
