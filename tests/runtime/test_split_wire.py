"""The split-inference wire format: exact round trips, byte counts as the plan counts them, and every
malformed frame refused with one line that names the field."""
from __future__ import annotations

import struct

import pytest
import torch

from kernels.uniform_quant import META_BYTES_PER_GROUP, QuantizedTensor, dequantize, payload_bytes, quantize
from runtime.split_inference import wire
from runtime.split_inference.wire import WireError, WireSpec


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8, 12, 16])
def test_uaq_tensor_round_trip_is_exact_and_costs_what_the_plan_counts(bits: int) -> None:
    x = torch.randn(2, 3, 5, 7)
    q = quantize(x, bits)
    frame = wire.encode_request(7, 1, 1.5, [q])
    f = wire.decode(frame, {1: [WireSpec("t", (2, 3, 5, 7), "float32", bits)]})
    (got,) = f.tensors
    assert isinstance(got, QuantizedTensor) and f.request_id == 7 and f.partition == 1
    assert torch.equal(dequantize(got), dequantize(q))
    per_row = 3 * 5 * 7
    framing = wire.HEADER_BYTES + struct.calcsize("<Hd") + 2 + wire.tensor_header_bytes(4)
    assert len(frame) == framing + 2 * (payload_bytes(per_row, bits, 0) + META_BYTES_PER_GROUP)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.bool,
                                   torch.uint8])
def test_raw_tensors_round_trip_bitwise(dtype: torch.dtype) -> None:
    x = (torch.randn(3, 4) * 50).to(dtype)
    f = wire.decode(wire.encode_result(3, 1.0, 2.0, 3.0, [x, torch.tensor(5.0)]))
    assert f.kind == wire.RESULT and f.clocks == (1.0, 2.0, 3.0)
    assert torch.equal(f.tensors[0], x) and f.tensors[0].dtype == dtype
    assert f.tensors[1].shape == () and float(f.tensors[1]) == 5.0


def test_control_frames_round_trip() -> None:
    aid = "0123456789abcdef" * 2
    f = wire.decode(wire.encode_hello(1, aid, 12.5))
    assert (f.kind, f.artifact_format, f.artifact_id, f.clocks) == (wire.HELLO, 1, aid, (12.5,))
    f = wire.decode(wire.encode_hello_ok(1, aid, 1.0, 2.0))
    assert f.clocks == (1.0, 2.0)
    f = wire.decode(wire.encode_error(4, "bad tensor"))
    assert (f.request_id, f.message) == (4, "bad tensor")
    f = wire.decode(wire.encode_probe(9, 3.0, 1000))
    assert (f.kind, f.request_id, f.padding) == (wire.PROBE, 9, 1000)
    assert wire.decode(wire.encode_probe_ack(9, 4.0)).clocks == (4.0,)


def _bad(frame: bytes, match: str, expect: dict | None = None) -> WireError:
    with pytest.raises(WireError, match=match) as err:
        wire.decode(frame, expect)
    assert "\n" not in err.value.one_line()
    return err.value


def test_malformed_frames_are_refused_naming_the_field() -> None:
    q = quantize(torch.randn(1, 16), 4)
    good = wire.encode_request(5, 0, 0.0, [q])
    expect = {0: [WireSpec("relu", (1, 16), "float32", 4)]}
    assert wire.decode(good, expect).tensors
    _bad(good[:-1], "payload needs", expect)
    _bad(good + b"\0", "trailing", expect)
    _bad(b"XXXX" + good[4:], "magic")
    _bad(good[:4] + bytes([9]) + good[5:], "wire version 9")
    _bad(good[:5] + bytes([77]) + good[6:], "unknown kind")
    err = _bad(good, r"expected \[1, 16\] float32 at 8 bits", {0: [WireSpec("relu", (1, 16), "float32", 8)]})
    assert err.request_id == 5
    _bad(good, "unknown partition 0", {1: expect[0]})
    _bad(good, "1 tensors, expected 2", {0: expect[0] * 2})
    # a payload length that does not match shape and bits
    head = wire.HEADER_BYTES + struct.calcsize("<Hd") + 2 + struct.calcsize("<BBBB") + 4 * 2
    groups, plen = struct.unpack_from("<IQ", good, head)
    forged = good[:head] + struct.pack("<IQ", groups, plen + 1) + good[head + 12:] + b"\0"
    _bad(forged, "payload is 9 bytes, expected 8")
    # a zero scale would divide by nothing meaningful: refused
    scale_at = head + 12
    zeroed = good[:scale_at] + struct.pack("<f", 0.0) + good[scale_at + 4:]
    _bad(zeroed, "scale")
    # a shape claiming more elements than the limit
    huge = wire.HEADER_BYTES + struct.calcsize("<Hd") + 2
    forged = good[:huge + 4] + struct.pack("<II", 1 << 16, 1 << 16) + good[huge + 12:]
    _bad(forged, "elements")
    _bad(b"", "header needs")
