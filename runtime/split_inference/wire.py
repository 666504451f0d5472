"""The edge <-> cloud wire format: compact, versioned frames of raw and UAQ-quantised tensors (never pickle).

Every gRPC message is one frame. All integers little-endian.

    frame   = magic "PSIW" | version u8 | kind u8 | reserved u16 | request id u64 | body
    HELLO     artifact format u16 | artifact id (32 ASCII hex) | edge clock f64
    HELLO_OK  artifact format u16 | artifact id | cloud clock at receipt f64 | cloud clock at reply f64
    REQUEST   partition u16 | edge clock when handed to the transport f64 | n u16 | n tensors
    RESULT    cloud arrival f64 | cloud start f64 | cloud done f64 | n u16 | n tensors      (cloud clock)
    ERROR     length u32 | UTF-8 message
    PROBE     edge clock f64 | length u32 | padding                  (link probe, see adaptation.py)
    PROBE_ACK cloud arrival f64

    tensor  = encoding u8 (0 raw, 1 UAQ) | dtype u8 | bits u8 | ndim u8 | shape u32 × ndim |
              groups u32 | payload length u64 | [UAQ: scale f32 × groups | zero point i32 × groups] | payload

A UAQ tensor is a `kernels.uniform_quant.QuantizedTensor` quantised per sample (one group per row of
dim 0): the payload is its bit-packed codes (uint8, `ceil(n·b/8)` bytes per row; int16 at 16 bits),
so a tensor costs exactly `payload_bytes(numel, b)` + 8 bytes per group, as the plan counts it, plus
`HEADER_BYTES` and `tensor_header_bytes(ndim)` of framing.

`decode` validates everything before it allocates: magic, version, kind, lengths against shapes and
bits, no trailing bytes, and (given the expected wire spec of a partition) every tensor's encoding,
dtype, shape and bits. A bad frame raises `WireError` (a `core.errors.PeerError`) with one line that
names the field at fault.
"""
from __future__ import annotations

import math
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from core.errors import PeerError
from kernels.uniform_quant import QuantizedTensor

WIRE_VERSION = 1
MAGIC = b"PSIW"
HELLO, HELLO_OK, REQUEST, RESULT, ERROR, PROBE, PROBE_ACK = 1, 2, 3, 4, 5, 6, 7
KIND_NAMES = {HELLO: "HELLO", HELLO_OK: "HELLO_OK", REQUEST: "REQUEST", RESULT: "RESULT", ERROR: "ERROR",
              PROBE: "PROBE", PROBE_ACK: "PROBE_ACK"}
RAW, UAQ = 0, 1
MAX_NDIM = 8
MAX_ELEMENTS = 1 << 30
MAX_ERROR_BYTES = 4096

_HEAD = struct.Struct("<4sBBHQ")
HEADER_BYTES = _HEAD.size
_TENSOR_HEAD = struct.Struct("<BBBB")
_GROUPS_LEN = struct.Struct("<IQ")

DTYPES: dict[int, torch.dtype] = {1: torch.float32, 2: torch.float16, 3: torch.bfloat16, 4: torch.float64,
                                  5: torch.int64, 6: torch.int32, 7: torch.int16, 8: torch.int8, 9: torch.uint8,
                                  10: torch.bool}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}

if sys.byteorder != "little":  # the format is little-endian and tensors are copied as raw bytes
    raise ImportError("the split-inference wire format needs a little-endian host")


class WireError(PeerError):
    """A frame that does not follow the wire format or does not match the expected tensors.

    `request_id` is the frame's request id when its header could be read (0 otherwise).
    """

    request_id: int = 0


@dataclass(frozen=True)
class WireSpec:
    """What one crossing tensor must look like: shape, dtype (torch name) and UAQ bits (None: raw)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    bits: int | None


@dataclass
class Frame:
    """A decoded frame. Only the fields of its kind are set."""

    kind: int
    request_id: int = 0
    partition: int = 0
    artifact_format: int = 0
    artifact_id: str = ""
    clocks: tuple[float, ...] = ()
    tensors: list[Any] = field(default_factory=list)   # torch.Tensor or QuantizedTensor
    message: str = ""
    padding: int = 0


def tensor_header_bytes(ndim: int) -> int:
    """Framing bytes of one tensor besides its payload and UAQ metadata (B)."""
    return _TENSOR_HEAD.size + 4 * ndim + _GROUPS_LEN.size


def _head(kind: int, request_id: int) -> bytes:
    return _HEAD.pack(MAGIC, WIRE_VERSION, kind, 0, int(request_id))


def _tensor_bytes(value: Any) -> list[bytes]:
    if isinstance(value, QuantizedTensor):
        if not value.per_sample or value.channel_dim is not None:
            raise ValueError("only per-sample UAQ tensors travel on the wire")
        shape = tuple(int(s) for s in value.shape)
        scale = value.scale.reshape(-1).to(torch.float32).contiguous()
        zero = value.zero_point.reshape(-1).to(torch.int32).contiguous()
        payload = value.payload.contiguous()
        pb = payload.numpy().tobytes()
        head = _TENSOR_HEAD.pack(UAQ, DTYPE_CODES[value.dtype], value.bits, len(shape))
        return [head, struct.pack(f"<{len(shape)}I", *shape), _GROUPS_LEN.pack(scale.numel(), len(pb)),
                scale.numpy().tobytes(), zero.numpy().tobytes(), pb]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"cannot send a {type(value).__name__} on the wire")
    t = value.detach().contiguous()
    if t.dtype not in DTYPE_CODES:
        raise TypeError(f"dtype {t.dtype} has no wire code")
    shape = tuple(int(s) for s in t.shape)
    # numpy has no bfloat16: its bytes travel as int16
    raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).cpu().numpy().tobytes()
    head = _TENSOR_HEAD.pack(RAW, DTYPE_CODES[t.dtype], 0, len(shape))
    return [head, struct.pack(f"<{len(shape)}I", *shape), _GROUPS_LEN.pack(0, len(raw)), raw]


def encode_tensors(values: Sequence[Any]) -> bytes:
    """n u16 followed by each tensor's encoding."""
    parts = [struct.pack("<H", len(values))]
    for v in values:
        parts.extend(_tensor_bytes(v))
    return b"".join(parts)


def encode_request(request_id: int, partition: int, handed_at: float, values: Sequence[Any]) -> bytes:
    """A REQUEST frame: the wire values of one request for one partition."""
    return _head(REQUEST, request_id) + struct.pack("<Hd", partition, handed_at) + encode_tensors(values)


def encode_result(request_id: int, arrival: float, start: float, done: float, outputs: Sequence[torch.Tensor]) -> bytes:
    """A RESULT frame: the model's flat outputs (raw) and the cloud's timestamps."""
    return _head(RESULT, request_id) + struct.pack("<ddd", arrival, start, done) + encode_tensors(outputs)


def encode_hello(artifact_format: int, artifact_id: str, clock: float) -> bytes:
    """HELLO: the edge's artifact identity and clock."""
    return _head(HELLO, 0) + struct.pack("<H32sd", artifact_format, _id_bytes(artifact_id), clock)


def encode_hello_ok(artifact_format: int, artifact_id: str, received: float, replied: float) -> bytes:
    """HELLO_OK: the cloud's artifact identity and clock readings (for the clock offset)."""
    return _head(HELLO_OK, 0) + struct.pack("<H32sdd", artifact_format, _id_bytes(artifact_id), received, replied)


def encode_error(request_id: int, message: str) -> bytes:
    """ERROR: a one-line message (truncated to MAX_ERROR_BYTES)."""
    raw = message.encode("utf-8")[:MAX_ERROR_BYTES]
    return _head(ERROR, request_id) + struct.pack("<I", len(raw)) + raw


def encode_probe(probe_id: int, clock: float, padding: int) -> bytes:
    """PROBE: `padding` zero bytes to measure the uplink when the current partition sends little."""
    return _head(PROBE, probe_id) + struct.pack("<dI", clock, padding) + bytes(padding)


def encode_probe_ack(probe_id: int, arrival: float) -> bytes:
    """PROBE_ACK: when the probe arrived (cloud clock)."""
    return _head(PROBE_ACK, probe_id) + struct.pack("<d", arrival)


def _id_bytes(artifact_id: str) -> bytes:
    raw = artifact_id.encode("ascii")
    if len(raw) != 32:
        raise ValueError("artifact ids are 32 hex characters")
    return raw


class _Reader:
    """Bounds-checked cursor over a frame."""

    def __init__(self, data: bytes, what: str) -> None:
        self.view = memoryview(data)
        self.pos = 0
        self.what = what

    def take(self, n: int, field_name: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.view):
            raise WireError(f"malformed {self.what}: {field_name} needs {n} bytes at offset {self.pos} but the frame "
                            f"has {len(self.view) - self.pos} left", "check that both sides run the same planner version")
        out = self.view[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct | str, field_name: str) -> tuple[Any, ...]:
        s = st if isinstance(st, struct.Struct) else struct.Struct(st)
        return s.unpack(self.take(s.size, field_name))

    def done(self) -> None:
        if self.pos != len(self.view):
            raise WireError(f"malformed {self.what}: {len(self.view) - self.pos} trailing bytes",
                            "check that both sides run the same planner version")


def _expected_payload(bits: int, rows: int, per_row: int) -> int:
    if bits == 8:
        return rows * per_row
    if bits == 16:
        return rows * per_row * 2
    return rows * math.ceil(per_row * bits / 8)


def _read_tensor(r: _Reader, index: int, expect: WireSpec | None) -> Any:
    enc, code, bits, ndim = r.unpack(_TENSOR_HEAD, f"tensor {index} header")
    where = f"tensor {index}" + (f" ({expect.name})" if expect else "")
    fix = "check that both sides run the same artifact and planner version"
    if enc not in (RAW, UAQ):
        raise WireError(f"malformed {r.what}: {where} has unknown encoding {enc}", fix)
    if code not in DTYPES:
        raise WireError(f"malformed {r.what}: {where} has unknown dtype code {code}", fix)
    if ndim > MAX_NDIM:
        raise WireError(f"malformed {r.what}: {where} has {ndim} dimensions (at most {MAX_NDIM})", fix)
    shape = tuple(r.unpack(f"<{ndim}I", f"{where} shape")) if ndim else ()
    numel = math.prod(shape) if shape else 1
    if numel > MAX_ELEMENTS:
        raise WireError(f"malformed {r.what}: {where} claims {numel} elements", fix)
    groups, plen = r.unpack(_GROUPS_LEN, f"{where} lengths")
    dtype = DTYPES[code]
    if expect is not None:
        got = (tuple(shape), str(dtype).replace("torch.", ""), bits if enc == UAQ else None)
        want = (tuple(expect.shape), expect.dtype, expect.bits)
        if got != want:
            raise WireError(f"malformed {r.what}: {where} is shape {list(got[0])} {got[1]} at "
                            f"{got[2] or 'raw'} bits, expected {list(want[0])} {want[1]} at {want[2] or 'raw'} bits", fix)
    if enc == RAW:
        esize = torch.empty((), dtype=dtype).element_size()
        if groups != 0 or plen != numel * esize:
            raise WireError(f"malformed {r.what}: {where} raw payload is {plen} bytes, expected {numel * esize} "
                            f"for shape {list(shape)} {dtype}", fix)
        buf = bytearray(r.take(plen, f"{where} payload"))
        if dtype == torch.bfloat16:
            t = torch.frombuffer(buf, dtype=torch.int16).view(torch.bfloat16) if plen else torch.empty(0, dtype=dtype)
        else:
            t = torch.frombuffer(buf, dtype=dtype) if plen else torch.empty(0, dtype=dtype)
        return t.reshape(shape)
    if not dtype.is_floating_point or not 1 <= bits <= 16:
        raise WireError(f"malformed {r.what}: {where} is UAQ with dtype {dtype} at {bits} bits", fix)
    rows = shape[0] if ndim else 1
    per_row = math.prod(shape[1:]) if ndim > 1 else 1
    if groups != rows:
        raise WireError(f"malformed {r.what}: {where} has {groups} quantisation groups, expected {rows} (one per sample)", fix)
    need = _expected_payload(bits, rows, per_row)
    if plen != need:
        raise WireError(f"malformed {r.what}: {where} payload is {plen} bytes, expected {need} for shape {list(shape)} "
                        f"at {bits} bits", fix)
    scale = torch.frombuffer(bytearray(r.take(4 * groups, f"{where} scales")), dtype=torch.float32)
    zero = torch.frombuffer(bytearray(r.take(4 * groups, f"{where} zero points")), dtype=torch.int32)
    if not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
        raise WireError(f"malformed {r.what}: {where} has a non-positive or non-finite scale", fix)
    raw = bytearray(r.take(plen, f"{where} payload"))
    if bits == 16:
        payload = torch.frombuffer(raw, dtype=torch.int16).reshape(rows, per_row)
    else:
        payload = torch.frombuffer(raw, dtype=torch.uint8).reshape(rows, -1)
    gshape = (rows, 1) if ndim == 0 else (rows,) + (1,) * (ndim - 1)
    return QuantizedTensor(payload=payload, scale=scale.reshape(gshape), zero_point=zero.reshape(gshape), bits=bits,
                           shape=shape, dtype=dtype)


def _read_tensors(r: _Reader, expect: Sequence[WireSpec] | None) -> list[Any]:
    (n,) = r.unpack("<H", "tensor count")
    if expect is not None and n != len(expect):
        raise WireError(f"malformed {r.what}: {n} tensors, expected {len(expect)}",
                        "check that both sides run the same artifact")
    return [_read_tensor(r, i, expect[i] if expect is not None else None) for i in range(n)]


def decode(data: bytes, expect: dict[int, Sequence[WireSpec]] | None = None) -> Frame:
    """Parse and validate one frame. `expect` maps partition -> wire specs (checked for REQUEST frames)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"malformed frame: a {type(data).__name__}, not bytes", "send frames built by wire.encode_*")
    r = _Reader(bytes(data), "frame")
    magic, version, kind, _reserved, rid = r.unpack(_HEAD, "header")
    if magic != MAGIC:
        raise WireError(f"malformed frame: magic {bytes(magic)!r}, expected {MAGIC!r}",
                        "connect the edge to a split-inference cloud (`planner run build/ --role cloud`)")
    if version != WIRE_VERSION:
        raise WireError(f"the peer speaks wire version {version}, this side {WIRE_VERSION}",
                        "run the same planner version on the edge and in the cloud")
    if kind not in KIND_NAMES:
        raise WireError(f"malformed frame: unknown kind {kind}", "run the same planner version on both sides")
    r.what = f"{KIND_NAMES[kind]} frame" + (f" of request {rid}" if kind in (REQUEST, RESULT) else "")
    try:
        return _decode_body(r, Frame(kind=kind, request_id=rid), expect)
    except WireError as exc:
        exc.request_id = rid
        raise


def _decode_body(r: _Reader, f: Frame, expect: dict[int, Sequence[WireSpec]] | None) -> Frame:
    kind = f.kind
    if kind == HELLO:
        fmt, aid, clock = r.unpack("<H32sd", "hello")
        f.artifact_format, f.artifact_id, f.clocks = fmt, bytes(aid).decode("ascii", "replace"), (clock,)
    elif kind == HELLO_OK:
        fmt, aid, c1, c2 = r.unpack("<H32sdd", "hello reply")
        f.artifact_format, f.artifact_id, f.clocks = fmt, bytes(aid).decode("ascii", "replace"), (c1, c2)
    elif kind == REQUEST:
        part, handed = r.unpack("<Hd", "request header")
        f.partition, f.clocks = part, (handed,)
        specs = None
        if expect is not None:
            if part not in expect:
                raise WireError(f"malformed {r.what}: unknown partition {part}",
                                "check that both sides run the same artifact")
            specs = expect[part]
        f.tensors = _read_tensors(r, specs)
    elif kind == RESULT:
        f.clocks = r.unpack("<ddd", "result clocks")
        f.tensors = _read_tensors(r, None)
    elif kind == ERROR:
        (n,) = r.unpack("<I", "error length")
        if n > MAX_ERROR_BYTES:
            raise WireError(f"malformed {r.what}: error message of {n} bytes", "run the same planner version")
        f.message = bytes(r.take(n, "error message")).decode("utf-8", "replace")
    elif kind == PROBE:
        clock, pad = r.unpack("<dI", "probe header")
        r.take(pad, "probe padding")
        f.clocks, f.padding = (clock,), pad
    elif kind == PROBE_ACK:
        f.clocks = r.unpack("<d", "probe ack")
    r.done()
    return f


def wire_specs(entries: Sequence[dict[str, Any]]) -> list[WireSpec]:
    """WireSpecs from runtime.yaml's `wire` entries of one partition."""
    return [WireSpec(e["name"], tuple(int(s) for s in e["shape"]), str(e["dtype"]),
                     None if e.get("bits") is None else int(e["bits"])) for e in entries]
