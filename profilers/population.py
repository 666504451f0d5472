"""Client populations for the federated families (fed-lora, fed-compress): a YAML file or a generator.

A population file lists device kinds (hardware catalog names or hardware YAML paths), counts or single
devices, and optional per-device memory, links and sample counts:

    defaults: {link: 20mbps, memory: 4GiB}      # optional; applies to every entry that does not say otherwise
    devices:
      - {kind: jetson_orin_nano_8gb, count: 10, link: 50mbps, memory: 6GiB, samples: 200}
      - {id: phone-7, kind: phone_midrange_8gb, uplink: 5mbps, downlink: 20mbps}

Fields of an entry (and of `defaults`, except `id`, `kind` and `count`):

    id        one device's name (only with count 1); otherwise ids are `<kind name>-<n>`, n = 0, 1, ... per kind
    kind      hardware catalog name or path to a hardware YAML (resolved by the caller's callback)
    count     number of identical devices (integer >= 1, default 1)
    memory    memory available for training, with a unit: 4GiB, 512MiB, 6GB (default: the device's memory)
    link      bandwidth of both directions, with a unit: 20mbps, 1.5Gbps, 500kbps, 2MB/s
    uplink    device -> server bandwidth (overrides link);   downlink: server -> device (overrides link)
              (default for both: the hardware profile's uplink/downlink figures)
    samples   local training samples (a plain integer >= 1; omitted = unknown, None)

Every quantity needs an explicit unit; bare numbers, unknown fields, zero or negative values and unknown
kinds raise `PlannerError` naming the file, the device entry and the field. Devices come back sorted by id
(natural order: `x-2` before `x-10`), so the same file always gives the same population.

`gen:N` and `gen:N:SEED` build a synthetic heterogeneous population of N devices (seed 0 by default)
from the tier mix in `GENERATOR_TIERS`: each device draws its tier with the listed probability, then
the fraction of the device's memory it may use for training, a link factor (log-uniform) and a speed
factor (uniform) from the tier's ranges, all from `numpy.random.default_rng(SEED)`. The speed factor
scales the profile's peak FLOP/s and memory bandwidth (the returned `hardware` already carries it,
with its name suffixed `@x0.87`); generated devices have `samples=None`.

No planner imports: kinds are resolved through `resolve_kind(name) -> HardwareProfile`, which the
caller passes in (the CLI passes `planner.registry.resolve_hardware`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from core.errors import PlannerError, reason_of
from core.units import RATE_FORMS, SIZE_FORMS, parse_bytes, parse_rate_bits
from profilers.hardware import HardwareProfile

KindResolver = Callable[[str], HardwareProfile]

ENTRY_FIELDS = ("id", "kind", "count", "memory", "link", "uplink", "downlink", "samples")
DEFAULT_FIELDS = ("memory", "link", "uplink", "downlink", "samples")
TOP_FIELDS = ("defaults", "devices")

_GEN = re.compile(r"^gen:(?P<n>\d+)(?::(?P<seed>\d+))?$")
# The largest population the planner takes: one round of 10 000 selected devices solves in about a second
# (docs/fed-compress.md), and a plan lists every device; a million devices already needs GiBs of profiles.
MAX_DEVICES = 100_000


def check_population_size(n: int, source: str) -> None:
    """Refuse a population above `MAX_DEVICES` before anything is allocated for it."""
    if n > MAX_DEVICES:
        raise PlannerError(f"{source} asks for {n:,} devices, more than the {MAX_DEVICES:,} a plan can hold",
                           f"plan a population of at most {MAX_DEVICES:,} devices (a representative sample)")



@dataclass(frozen=True)
class ClientDevice:
    """One federated client: its hardware and the resources it offers to training.

    `memory_bytes` is the memory available for training (B), `uplink_bits_per_s` (device -> server)
    and `downlink_bits_per_s` (server -> device) its link (bit/s), `samples` its local training
    samples (None when the file does not say). `speed_factor` is the throughput multiplier a
    generated population drew for this device; it is already applied to `hardware` (1.0 otherwise).
    """

    id: str
    kind: str
    hardware: HardwareProfile
    memory_bytes: int
    uplink_bits_per_s: float
    downlink_bits_per_s: float
    samples: int | None = None
    speed_factor: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able summary (hardware by name and fingerprint)."""
        return {"id": self.id, "kind": self.kind, "hardware": self.hardware.name,
                "hardware_fingerprint": self.hardware.fingerprint(), "memory_bytes": self.memory_bytes,
                "uplink_bits_per_s": self.uplink_bits_per_s, "downlink_bits_per_s": self.downlink_bits_per_s,
                "samples": self.samples, "speed_factor": self.speed_factor}


@dataclass(frozen=True)
class Population:
    """A client population in deterministic (natural id) order; `source` is the file path or `gen:N:SEED`."""

    source: str
    devices: tuple[ClientDevice, ...]

    def __len__(self) -> int:
        return len(self.devices)

    @property
    def ids(self) -> tuple[str, ...]:
        """Device ids in population order."""
        return tuple(d.id for d in self.devices)

    def fingerprint(self) -> str:
        """sha256 over every device's resources and hardware fingerprint (not over the file's path)."""
        blob = json.dumps([d.to_dict() for d in self.devices], sort_keys=True).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]


# ------------------------------------------------------------------ quantities
def _where(source: str, device: str, field: str) -> str:
    return f"{source}: device {device}: field '{field}'"


def parse_size(value: Any, where: str) -> int:
    """'4GiB', '512MB', '1.5 GiB' -> bytes (> 0); a bare number or another unit is an error naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PlannerError(f"{where} is {value!r}, not a size", f"write it with a unit, like {SIZE_FORMS}")
    n = parse_bytes(str(value), where)
    if n <= 0:
        raise PlannerError(f"{where} is '{value}', but it must be positive", f"write a positive size, like {SIZE_FORMS}")
    return n


def parse_rate(value: Any, where: str) -> float:
    """'20mbps', '1.5Gbps', '2MB/s' -> bits per second (> 0); bare numbers are an error naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PlannerError(f"{where} is {value!r}, not a bandwidth", f"write it with a unit, like {RATE_FORMS}")
    rate = parse_rate_bits(str(value), where)
    if rate <= 0:
        raise PlannerError(f"{where} is '{value}', but it must be positive",
                           f"write a positive bandwidth, like {RATE_FORMS}")
    return rate


def _parse_count(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlannerError(f"{where} is {value!r}, not a whole number", f"write {what} as an integer >= 1, like 200")
    if value < 1:
        raise PlannerError(f"{where} is {value}, but it must be at least 1", f"write {what} as an integer >= 1")
    return int(value)


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers by value: 'pi-2' < 'pi-10'."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


# ------------------------------------------------------------------ files
def _resolve(resolve_kind: KindResolver, kind: Any, where: str, source: str) -> HardwareProfile:
    if not isinstance(kind, str) or not kind.strip():
        raise PlannerError(f"{where} is {kind!r}, not a hardware name",
                           "write a hardware catalog name (see `planner hardware list`) or a hardware YAML path")
    name = kind.strip()
    if name.endswith((".yaml", ".yml")) and not Path(name).is_absolute():
        # A relative hardware YAML path is read relative to the population file, like an include.
        candidate = Path(source).parent / name
        if candidate.exists():
            name = str(candidate)
    try:
        return resolve_kind(name)
    except PlannerError as exc:
        raise PlannerError(f"{where}: {exc.problem}", exc.fix or "see `planner hardware list`") from exc
    except (ValueError, KeyError, OSError) as exc:
        raise PlannerError(f"{where}: cannot resolve hardware '{kind}' ({exc})", "see `planner hardware list`") from exc


def _resources(entry: Mapping[str, Any], defaults: Mapping[str, Any], hw: HardwareProfile, source: str,
               device: str) -> tuple[int, float, float, int | None]:
    """(memory B, uplink bit/s, downlink bit/s, samples) of one entry, defaults and hardware filling gaps."""

    def pick(key: str) -> tuple[Any, str] | None:
        if key in entry:
            return entry[key], device
        if key in defaults:
            return defaults[key], "defaults"
        return None

    mem = pick("memory")
    memory = parse_size(mem[0], _where(source, mem[1], "memory")) if mem else int(hw.memory_bytes)
    if memory > hw.memory_bytes:
        raise PlannerError(f"{_where(source, device, 'memory')} asks for {memory / 2**30:.3g} GiB, more than "
                           f"{hw.name} has ({hw.memory_bytes / 2**30:.3g} GiB)",
                           f"give at most {hw.memory_bytes / 2**30:.3g}GiB")
    rates: dict[str, float] = {}
    for direction, hw_value in (("uplink", hw.uplink_bits_per_s), ("downlink", hw.downlink_bits_per_s)):
        # Precedence: the entry's own direction, its `link`, then defaults' direction, defaults' link, hardware.
        for scope, where in ((entry, device), (defaults, "defaults")):
            key = direction if direction in scope else ("link" if "link" in scope else None)
            if key is not None:
                rates[direction] = parse_rate(scope[key], _where(source, where, key))
                break
        else:
            if hw_value is None:
                raise PlannerError(f"{source}: device {device}: no {direction} bandwidth (hardware {hw.name} "
                                   "has none)", f"add 'link: 20mbps' (or '{direction}: ...') to the entry or to defaults")
            rates[direction] = float(hw_value)
    smp = pick("samples")
    samples = _parse_count(smp[0], _where(source, smp[1], "samples"), "samples") if smp else None
    return memory, rates["uplink"], rates["downlink"], samples


def population_from_dict(data: Any, source: str, resolve_kind: KindResolver) -> Population:
    """Validate a parsed population mapping (see the module docstring) and build the population."""
    if not isinstance(data, dict):
        raise PlannerError(f"{source} does not hold a mapping with a 'devices' list",
                           "write 'devices: [{kind: jetson_orin_nano_8gb, count: 4}]'")
    unknown = sorted(set(map(str, data)) - set(TOP_FIELDS))
    if unknown:
        raise PlannerError(f"{source}: unknown top-level field(s) {', '.join(unknown)}",
                           f"use only {', '.join(TOP_FIELDS)}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise PlannerError(f"{source}: 'defaults' is not a mapping", "write it like defaults: {link: 20mbps, memory: 4GiB}")
    bad = sorted(set(map(str, defaults)) - set(DEFAULT_FIELDS))
    if bad:
        raise PlannerError(f"{source}: defaults: unknown field(s) {', '.join(bad)}",
                           f"defaults may set {', '.join(DEFAULT_FIELDS)}")
    entries = data.get("devices")
    if not isinstance(entries, list) or not entries:
        raise PlannerError(f"{source}: 'devices' is missing or empty", "list at least one device: devices: [{kind: ..., count: 2}]")

    total = 0
    for pos, entry in enumerate(entries, start=1):   # sizes first: refuse a huge population before building it
        if isinstance(entry, dict):
            label = str(entry.get("id", f"entry {pos}"))
            total += _parse_count(entry.get("count", 1), _where(source, label, "count"), "count")
    check_population_size(total, source)

    devices: list[ClientDevice] = []
    per_kind: dict[str, int] = {}
    for pos, entry in enumerate(entries, start=1):
        label = f"entry {pos}"
        if not isinstance(entry, dict):
            raise PlannerError(f"{source}: device {label} is not a mapping", "write it like {kind: raspberry_pi5_8gb, count: 2}")
        if "id" in entry:
            if not isinstance(entry["id"], (str, int)) or isinstance(entry["id"], bool) or not str(entry["id"]).strip():
                raise PlannerError(f"{source}: device {label}: field 'id' is {entry['id']!r}", "write a non-empty name")
            label = str(entry["id"]).strip()
        bad = sorted(set(map(str, entry)) - set(ENTRY_FIELDS))
        if bad:
            raise PlannerError(f"{source}: device {label}: unknown field(s) {', '.join(bad)}",
                               f"a device entry may have {', '.join(ENTRY_FIELDS)}")
        if "kind" not in entry:
            raise PlannerError(f"{source}: device {label}: field 'kind' is missing",
                               "name its hardware, e.g. kind: jetson_orin_nano_8gb")
        hw = _resolve(resolve_kind, entry["kind"], _where(source, label, "kind"), source)
        count = _parse_count(entry.get("count", 1), _where(source, label, "count"), "count")
        if "id" in entry and count != 1:
            raise PlannerError(f"{source}: device {label}: 'id' names one device but count is {count}",
                               "drop 'id' (ids become <kind>-<n>) or set count: 1")
        memory, up, down, samples = _resources(entry, defaults, hw, source, label)
        for _ in range(count):
            if "id" in entry:
                dev_id = label
            else:
                n = per_kind.get(hw.name, 0)
                per_kind[hw.name] = n + 1
                dev_id = f"{hw.name}-{n}"
            devices.append(ClientDevice(id=dev_id, kind=str(entry["kind"]).strip(), hardware=hw, memory_bytes=memory,
                                        uplink_bits_per_s=up, downlink_bits_per_s=down, samples=samples))
    seen: set[str] = set()
    for d in devices:
        if d.id in seen:
            raise PlannerError(f"{source}: device id '{d.id}' appears twice",
                               "give every explicit id a unique name (generated ids are <kind>-<n>)")
        seen.add(d.id)
    return Population(source=source, devices=tuple(sorted(devices, key=lambda d: natural_key(d.id))))


def load_population(path: str | Path, resolve_kind: KindResolver) -> Population:
    """Read and validate a population YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlannerError(f"cannot read client population file {p} ({reason_of(exc)})",
                           "pass an existing YAML file, or gen:N for a generated population") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise PlannerError(f"{p} is not valid YAML{at}", "fix the syntax (see the population format in docs)") from exc
    return population_from_dict(data, str(p), resolve_kind)


# ------------------------------------------------------------------ generator
@dataclass(frozen=True)
class GeneratorTier:
    """One tier of `gen:N`: a catalog device, its share, and the ranges its devices draw from.

    `memory_fraction` is the share of the device's memory available for training (uniform),
    `link_factor` multiplies the profile's up/down links (log-uniform), `speed_factor` its peak
    FLOP/s and memory bandwidth (uniform).
    """

    kind: str
    share: float
    memory_fraction: tuple[float, float]
    link_factor: tuple[float, float]
    speed_factor: tuple[float, float]


# A documented mix from a weak phone-heavy fleet to a few strong edge boxes: memory ratio ~8x, speed ratio
# ~20x between the extremes. Shares are the expected fractions of devices.
GENERATOR_TIERS: tuple[GeneratorTier, ...] = (
    GeneratorTier("phone_midrange_8gb", 0.35, (0.15, 0.35), (0.3, 2.0), (0.6, 1.2)),
    GeneratorTier("raspberry_pi5_8gb", 0.20, (0.3, 0.6), (0.5, 2.0), (0.8, 1.1)),
    GeneratorTier("jetson_tx2_8gb", 0.15, (0.3, 0.6), (0.5, 2.0), (0.8, 1.1)),
    GeneratorTier("jetson_orin_nano_8gb", 0.20, (0.4, 0.7), (0.5, 2.0), (0.8, 1.1)),
    GeneratorTier("jetson_agx_orin_32gb", 0.10, (0.25, 0.5), (0.5, 2.0), (0.9, 1.1)),
)


def _scaled(hw: HardwareProfile, speed: float) -> HardwareProfile:
    if speed == 1.0:
        return hw
    return dataclasses.replace(
        hw, name=f"{hw.name}@x{speed:.2f}",
        peak_flops_per_s={k: v * speed for k, v in hw.peak_flops_per_s.items()},
        memory_bandwidth_bytes_per_s=hw.memory_bandwidth_bytes_per_s * speed,
        description=f"{hw.description}; throughput scaled x{speed:.2f} by the population generator (synthetic)",
        base=hw.name)


def generate_population(n: int, seed: int, resolve_kind: KindResolver,
                        tiers: tuple[GeneratorTier, ...] = GENERATOR_TIERS) -> Population:
    """A seeded heterogeneous population of `n` devices drawn from `tiers` (see the module docstring)."""
    import numpy as np

    if n < 1:
        raise PlannerError("gen:N needs at least one device", "write gen:10 or gen:1000:7")
    check_population_size(n, f"gen:{n}")
    rng = np.random.default_rng(seed)
    profiles = [resolve_kind(t.kind) for t in tiers]
    shares = np.array([t.share for t in tiers], dtype=float)
    choice = rng.choice(len(tiers), size=n, p=shares / shares.sum())
    width = len(str(n - 1))
    devices = []
    for i in range(n):
        t, hw = tiers[int(choice[i])], profiles[int(choice[i])]
        mem_frac = rng.uniform(*t.memory_fraction)
        link = float(np.exp(rng.uniform(np.log(t.link_factor[0]), np.log(t.link_factor[1]))))
        speed = round(float(rng.uniform(*t.speed_factor)), 2)
        up = (hw.uplink_bits_per_s or 2e7) * link
        down = (hw.downlink_bits_per_s or 1e8) * link
        # Memory rounded to MiB so plans print stable numbers.
        memory = int(hw.memory_bytes * mem_frac) // 2**20 * 2**20
        devices.append(ClientDevice(id=f"{hw.name}-{i:0{width}d}", kind=t.kind, hardware=_scaled(hw, speed),
                                    memory_bytes=memory, uplink_bits_per_s=round(up), downlink_bits_per_s=round(down),
                                    samples=None, speed_factor=speed))
    return Population(source=f"gen:{n}:{seed}", devices=tuple(sorted(devices, key=lambda d: natural_key(d.id))))


def parse_population(spec: str, resolve_kind: KindResolver) -> Population:
    """`gen:N`, `gen:N:SEED` or a path to a population YAML file."""
    text = str(spec).strip()
    if text.startswith("gen:") or text == "gen":
        m = _GEN.match(text)
        if not m:
            raise PlannerError(f"cannot read the generated population '{text}'", "write gen:N or gen:N:SEED, e.g. gen:1000:7")
        return generate_population(int(m.group("n")), int(m.group("seed") or 0), resolve_kind)
    return load_population(text, resolve_kind)
