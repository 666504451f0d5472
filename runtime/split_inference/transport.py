"""gRPC transport between the edge and the cloud: one bidirectional stream of wire frames.

No .proto: a generic method handler (`/planner.split.Cloud/Stream`) carries raw bytes, each message
one frame of `wire.py`. A stream opens with HELLO (artifact format and id, edge clock); the cloud
answers HELLO_OK (its clock readings, for the clock offset and the RTT) or ERROR when the two sides
hold different artifacts, and ends that stream. REQUEST frames are answered by RESULT frames in order.

Cloud (`CloudService`): a reader thread time-stamps every message as it arrives (so link time is not
mixed with cloud queueing); the handler validates the frame against the partition's expected tensors
and runs the cloud half under one lock (the cloud is a single server). A bad frame is answered by an
ERROR frame naming the field at fault and the stream goes on: one bad edge never takes the cloud down.

Edge (`EdgeLink`): requests are kept until their RESULT arrives (the acknowledgement). When the stream
breaks (the cloud restarted, the network dropped) the link reconnects with back-off until
`reconnect_timeout_s`, handshakes again, and resends every unacknowledged frame in order; a RESULT for
a request already answered is dropped and counted, so each request is answered exactly once. A peer
that never answers (no gRPC server, a server that ignores the handshake, a request with no answer for
`timeout_s`) ends the run with a `core.errors.PeerError`.

Delay emulation (labelled, off by default): this kernel has no netem, so a one-way propagation delay is
emulated in the transport. Each side holds every message it receives until `one_way_delay_s` after it
arrived (a delay line: messages keep their order and their delays overlap, as on a long wire) and time-stamps
it then, so the receipt's link stage and the handshake RTT include the delay as they would on a real link.

Clocks: the edge converts cloud timestamps with the offset measured at the handshake (NTP-style,
`offset = ((c1 − t0) + (c2 − t3)) / 2`); on one host both sides read the same CLOCK_MONOTONIC and the
offset measures ~0.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import grpc
import torch

from core.errors import PeerError
from runtime.split_inference import wire
from runtime.split_inference.artifact import Artifact

log = logging.getLogger(__name__)

SERVICE = "planner.split.Cloud"
METHOD = "Stream"
FULL_METHOD = f"/{SERVICE}/{METHOD}"
MAX_MESSAGE_BYTES = 256 << 20
GRPC_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # reconnect fast after a cloud restart (the default back-off starts at 1 s and grows to 120 s)
                ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000)]


def now() -> float:
    """Monotonic clock (s), system-wide on Linux, so two processes on one host read the same time."""
    return time.monotonic()


def hold_until(t: float, spin_s: float = 0.0) -> None:
    """Sleep until the monotonic clock reads `t` (s); returns at once when it has passed. With `spin_s`, sleep for
    all but the last `spin_s` and spin (yielding) through it: a plain sleep woke up ms late on a loaded host."""
    wait = t - now() - spin_s
    if wait > 0:
        time.sleep(wait)
    while spin_s > 0 and now() < t:
        time.sleep(0)


def delayed(messages: Iterator[bytes], one_way_delay_s: float) -> Iterator[tuple[float, bytes]]:
    """(arrival time, message) of every message, each released `one_way_delay_s` after it arrived (emulated
    propagation). A reader thread time-stamps messages as they arrive, so the delays of messages in flight
    overlap; an exception of the underlying iterator is raised here, after the messages before it."""
    if one_way_delay_s <= 0:
        for msg in messages:
            yield now(), msg
        return
    box: "queue.Queue[tuple[float, Any, BaseException | None]]" = queue.Queue()

    def reader() -> None:
        try:
            for msg in messages:
                box.put((now(), msg, None))
            box.put((now(), None, None))
        except BaseException as exc:  # handed to the consumer, raised there
            box.put((now(), None, exc))

    threading.Thread(target=reader, daemon=True, name="delay-line").start()
    while True:
        t, msg, exc = box.get()
        if msg is None:
            if exc is not None:
                raise exc
            return
        hold_until(t + one_way_delay_s)
        yield t + one_way_delay_s, msg


# ------------------------------------------------------------------ cloud
@dataclass
class CloudStats:
    """What the cloud did (for its log line and tests)."""

    streams: int = 0
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    cpu_s: float = 0.0          # CPU time of the cloud halves (the computing thread's)
    compute_s: float = 0.0      # their wall time, before any emulation pad
    overruns: int = 0           # requests whose compute's wall time alone passed the emulated time (emulate_cpu)


class CloudService:
    """Serves the cloud halves of an artifact over the gRPC stream."""

    def __init__(self, artifact: Artifact, emulate: bool = False, one_way_delay_s: float = 0.0,
                 emulate_cpu: float | None = None) -> None:
        self.art = artifact
        self.one_way_delay_s = one_way_delay_s     # emulated propagation on the uplink (module docstring)
        self.expect = artifact.expected_wire()
        self.lock = threading.Lock()
        self.stats = CloudStats()
        # cloud emulation (off by default; labelled in the cloud's log): pad each request's cloud stage to the
        # plan's predicted cloud_ms when this CPU is faster than the cloud profile (it cannot speed it up)
        self.emulate = emulate
        # or (labelled): hold each request's cloud stage for emulate_cpu x its CPU time here, a dedicated device that
        # many times slower than this CPU's core, whatever else the host runs (pipeline.EdgeOptions.emulate_cpu)
        self.emulate_cpu = emulate_cpu

    def _error(self, request_id: int, message: str) -> bytes:
        self.stats.errors += 1
        self.stats.last_error = message
        log.warning("cloud: %s", message)
        return wire.encode_error(request_id, message)

    def stream(self, request_iterator: Iterator[bytes], context: Any) -> Iterator[bytes]:
        """The stream handler: HELLO, then REQUEST/PROBE frames answered in order."""
        self.stats.streams += 1
        inbox: "queue.Queue[tuple[float, Any] | None]" = queue.Queue()

        def reader() -> None:
            try:
                for msg in request_iterator:
                    inbox.put((now(), msg))
            except Exception as exc:  # the stream ended under us (edge gone, cancelled): stop quietly
                log.debug("cloud: stream reader stopped (%s)", exc)
            finally:
                inbox.put(None)

        threading.Thread(target=reader, daemon=True, name="cloud-reader").start()
        greeted = False
        while True:
            item = inbox.get()
            if item is None:
                return
            arrival, msg = item
            if self.one_way_delay_s > 0:           # emulated propagation: the frame lands one delay later
                arrival += self.one_way_delay_s
                hold_until(arrival)
            try:
                f = wire.decode(msg, self.expect)
            except wire.WireError as exc:
                yield self._error(exc.request_id, exc.one_line())
                continue
            if f.kind == wire.HELLO:
                if f.artifact_format != self.art.format or f.artifact_id != self.art.artifact_id:
                    yield self._error(0, f"the edge holds artifact {f.artifact_id} (format {f.artifact_format}) but this "
                                         f"cloud holds {self.art.artifact_id} (format {self.art.format}). Emit once "
                                         "and copy the same directory to both sides")
                    return
                greeted = True
                yield wire.encode_hello_ok(self.art.format, self.art.artifact_id, arrival, now())
            elif not greeted:
                yield self._error(f.request_id, f"a {wire.KIND_NAMES[f.kind]} frame before HELLO. Open the stream with HELLO")
            elif f.kind == wire.PROBE:
                yield wire.encode_probe_ack(f.request_id, arrival)
            elif f.kind == wire.REQUEST:
                part = self.art.partitions[f.partition]
                if part.cloud is None:
                    yield self._error(f.request_id, f"partition {part.pid} runs entirely on the edge; nothing to compute")
                    continue
                try:
                    with self.lock, torch.inference_mode():
                        start, c0 = now(), time.thread_time()
                        outs = part.cloud(*f.tensors)
                        cpu, wall = time.thread_time() - c0, now() - start
                        self.stats.cpu_s += cpu
                        self.stats.compute_s += wall
                        if self.emulate_cpu is not None:
                            self.stats.overruns += int(wall > self.emulate_cpu * cpu)
                            hold_until(start + self.emulate_cpu * cpu, spin_s=0.002)
                        elif self.emulate:
                            pred = part.predicted
                            target = pred.get("cloud_compute_ms", pred.get("cloud_ms")) or 0.0
                            time.sleep(max(0.0, float(target) / 1e3 - (now() - start)))
                        done = now()
                except Exception as exc:  # a well-framed but wrong tensor: answer with the reason, keep serving
                    yield self._error(f.request_id, f"the cloud half of {part.pid} failed on request {f.request_id} "
                                                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")
                    continue
                self.stats.requests += 1
                yield wire.encode_result(f.request_id, arrival, start, done, list(outs))
            else:
                yield self._error(f.request_id, f"the cloud does not accept {wire.KIND_NAMES[f.kind]} frames")


def start_cloud_server(service: CloudService, listen: str, workers: int = 4) -> tuple[grpc.Server, int]:
    """Start a gRPC server for `service` on `listen` (HOST:PORT, port 0 = any); returns (server, bound port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=GRPC_OPTIONS)
    handler = grpc.method_handlers_generic_handler(SERVICE, {METHOD: grpc.stream_stream_rpc_method_handler(service.stream)})
    server.add_generic_rpc_handlers((handler,))
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise PeerError(f"cannot listen on {listen} ({exc})", "pass a free --listen HOST:PORT") from exc
    if port == 0:
        raise PeerError(f"cannot listen on {listen}", "pass a free --listen HOST:PORT")
    server.start()
    return server, port


# ------------------------------------------------------------------ edge
@dataclass
class Arrival:
    """A RESULT or PROBE_ACK as the edge sees it (times on the edge clock, s)."""

    request_id: int
    frame: wire.Frame
    received_at: float
    handed_at: float
    frame_bytes: int
    probe: bool = False


@dataclass
class LinkStats:
    """Counters the receipt reports."""

    reconnects: int = 0
    resent: int = 0
    duplicates_dropped: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    handshake_rtt_s: float = 0.0
    clock_offset_s: float = 0.0
    reconnect_log: list[str] = field(default_factory=list)


class _Stream:
    """One gRPC stream: its call, the request generator's state, and the handshake outcome."""

    def __init__(self) -> None:
        self.sent: set[int] = set()
        self.closed = threading.Event()
        self.greeted = threading.Event()
        self.hello_error = ""
        self.call: Any = None


class EdgeLink:
    """The edge's end of the stream: send frames, deliver each answer once, survive cloud restarts."""

    def __init__(self, target: str, artifact_format: int, artifact_id: str, on_arrival: Callable[[Arrival], None], *,
                 timeout_s: float = 30.0, connect_timeout_s: float = 10.0, reconnect_timeout_s: float = 30.0,
                 one_way_delay_s: float = 0.0) -> None:
        self.target = target
        self.one_way_delay_s = one_way_delay_s     # emulated propagation on the downlink (module docstring)
        self.artifact_format = artifact_format
        self.artifact_id = artifact_id
        self.on_arrival = on_arrival
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.stats = LinkStats()
        self.lock = threading.RLock()
        self.unacked: "OrderedDict[int, bytes]" = OrderedDict()
        self.probes: "OrderedDict[int, bytes]" = OrderedDict()
        self.handed: dict[int, float] = {}
        self.probe_bytes: dict[int, int] = {}
        self.first_sent: dict[int, float] = {}
        self.cv = threading.Condition(self.lock)
        self.fatal: PeerError | None = None
        self.closing = False
        self.channel: grpc.Channel | None = None
        self.stream: _Stream | None = None
        self.receiver: threading.Thread | None = None
        self._hello_t0 = 0.0

    # ---- connection
    def _open(self, timeout_s: float) -> None:
        """Open a channel and a stream, handshake; raises PeerError on timeout or refusal."""
        ch = grpc.insecure_channel(self.target, options=GRPC_OPTIONS)
        try:
            grpc.channel_ready_future(ch).result(timeout=timeout_s)
        except grpc.FutureTimeoutError as exc:
            ch.close()
            raise PeerError(f"no split-inference cloud answered at {self.target} within {timeout_s:g} s",
                            f"start one with `planner run DIR --role cloud --listen {self.target}` or fix --connect") from exc
        st = _Stream()
        self.channel, self.stream = ch, st
        call = ch.stream_stream(FULL_METHOD)(self._requests(st))
        st.call = call
        self.receiver = threading.Thread(target=self._receive, args=(st, call), daemon=True, name="edge-receiver")
        self.receiver.start()
        if not st.greeted.wait(timeout_s):
            call.cancel()
            ch.close()
            if st.hello_error:
                raise PeerError(st.hello_error, "check that the cloud runs the same artifact")
            raise PeerError(f"the cloud at {self.target} accepted the connection but did not answer the handshake "
                            f"within {timeout_s:g} s", "check that --connect points at `planner run DIR --role cloud`")
        if st.hello_error:
            raise PeerError(st.hello_error, "emit once and copy the same artifact directory to the edge and the cloud")

    def connect(self) -> None:
        """First connection (PeerError if the cloud does not answer within `connect_timeout_s`)."""
        self._open(self.connect_timeout_s)

    def _reconnect(self, reason: str) -> None:
        """Reopen the stream until `reconnect_timeout_s`; the new stream resends every unacked frame."""
        deadline = now() + self.reconnect_timeout_s
        self.stats.reconnects += 1
        with self.lock:
            pending = len(self.unacked)
        self.stats.reconnect_log.append(f"stream lost ({reason}); {pending} request(s) unacknowledged")
        log.warning("edge: stream to %s lost (%s); reconnecting", self.target, reason)
        last: Exception | None = None
        while not self.closing and now() < deadline:
            try:
                self._open(min(2.0, max(0.1, deadline - now())))
                return
            except PeerError as exc:
                last = exc
                if "holds artifact" in exc.problem:
                    raise
                time.sleep(0.1)
        raise PeerError(f"lost the cloud at {self.target} and could not reconnect within {self.reconnect_timeout_s:g} s "
                        f"({last.problem if isinstance(last, PeerError) else reason})",
                        "restart the cloud process, then the edge")

    # ---- the request generator of one stream
    def _requests(self, st: _Stream) -> Iterator[bytes]:
        """HELLO, then (after HELLO_OK) every unacknowledged frame this stream has not sent, in request order.

        Scanning `unacked` instead of draining a queue means a frame handed to a stream that died is sent
        again on the next one, whichever thread noticed the failure first.
        """
        self._hello_t0 = now()
        yield wire.encode_hello(self.artifact_format, self.artifact_id, self._hello_t0)
        while not st.greeted.is_set():
            if st.closed.is_set() or self.closing:
                return
            st.greeted.wait(0.05)
        if st.hello_error:
            return
        while not st.closed.is_set() and not self.closing:
            with self.cv:
                key, frame = None, None
                if self.probes:
                    key, frame = next(iter(self.probes.items()))
                    del self.probes[key]
                else:
                    for rid, fr in self.unacked.items():
                        if rid not in st.sent:
                            key, frame = rid, fr
                            break
                if frame is None:
                    self.cv.wait(0.05)
                    continue
                t = now()
                st.sent.add(key)
                self.handed[key] = t
                if key >= 0:
                    if key in self.first_sent:
                        self.stats.resent += 1
                    else:
                        self.first_sent[key] = t
                self.stats.bytes_sent += len(frame)
            yield frame

    # ---- the receiver of one stream
    def _receive(self, st: _Stream, call: Any) -> None:
        try:
            for t, msg in delayed(call, self.one_way_delay_s):
                self.stats.bytes_received += len(msg)
                try:
                    f = wire.decode(msg)
                except wire.WireError as exc:
                    self._fail(PeerError(f"the cloud sent a malformed frame: {exc.problem}", exc.fix))
                    return
                if f.kind == wire.HELLO_OK:
                    c1, c2 = f.clocks
                    t0 = self._hello_t0
                    self.stats.clock_offset_s = ((c1 - t0) + (c2 - t)) / 2.0
                    self.stats.handshake_rtt_s = max(0.0, (t - t0) - (c2 - c1))
                    st.greeted.set()
                elif f.kind == wire.ERROR:
                    if not st.greeted.is_set():
                        st.hello_error = f"the cloud refused the handshake: {f.message}"
                        st.greeted.set()
                        return
                    self._fail(PeerError(f"the cloud rejected request {f.request_id}: {f.message}",
                                         "check that both sides run the same artifact and planner version"))
                    return
                elif f.kind in (wire.RESULT, wire.PROBE_ACK):
                    self._deliver(f, t)
                else:
                    self._fail(PeerError(f"the cloud sent an unexpected {wire.KIND_NAMES[f.kind]} frame",
                                         "run the same planner version on both sides"))
                    return
            reason = "the cloud closed the stream"
        except grpc.RpcError as exc:
            reason = f"{exc.code().name if hasattr(exc, 'code') else 'RPC error'}"
        finally:
            st.closed.set()
        if self.closing or self.fatal is not None or st is not self.stream or not st.greeted.is_set():
            return
        try:
            self._reconnect(reason)
        except PeerError as exc:
            self._fail(exc)

    def _deliver(self, f: wire.Frame, t: float) -> None:
        probe = f.kind == wire.PROBE_ACK
        key = -f.request_id if probe else f.request_id
        with self.lock:
            handed = self.handed.pop(key, t)
            if probe:
                nbytes = self.probe_bytes.pop(key, 0)
            elif f.request_id in self.unacked:
                nbytes = len(self.unacked.pop(f.request_id))
                self.first_sent.pop(f.request_id, None)
            else:
                self.stats.duplicates_dropped += 1
                return
        self.on_arrival(Arrival(f.request_id, f, t, handed, nbytes, probe))

    def _fail(self, exc: PeerError) -> None:
        if self.fatal is None:
            self.fatal = exc
        log.error("edge: %s", exc.one_line())

    # ---- public
    def send(self, request_id: int, frame: bytes) -> None:
        """Queue one REQUEST frame (id >= 0); it stays unacknowledged until its RESULT arrives."""
        self.raise_if_failed()
        with self.cv:
            self.unacked[request_id] = frame
            self.cv.notify_all()

    def send_probe(self, probe_id: int, frame: bytes) -> None:
        """Queue a PROBE frame (id > 0; kept under -id so it never collides with a request). Not resent."""
        with self.cv:
            self.probes[-probe_id] = frame
            self.probe_bytes[-probe_id] = len(frame)
            self.cv.notify_all()

    def pending(self) -> int:
        """Requests sent and not yet answered."""
        with self.lock:
            return len(self.unacked)

    def raise_if_failed(self) -> None:
        """Raise the stored PeerError, if any, and any request older than `timeout_s`."""
        if self.fatal is not None:
            raise self.fatal
        with self.lock:
            oldest = next(iter(self.unacked), None)
            since = self.first_sent.get(oldest) if oldest is not None else None
        if since is not None and now() - since > self.timeout_s and self.stream is not None and self.stream.greeted.is_set():
            raise PeerError(f"the cloud at {self.target} did not answer request {oldest} within {self.timeout_s:g} s",
                            "check the cloud process, or raise the timeout for very slow links")

    def close(self) -> None:
        """End the stream and the channel."""
        self.closing = True
        st = self.stream
        if st is not None:
            st.closed.set()
            if st.call is not None:
                st.call.cancel()
        if self.channel is not None:
            self.channel.close()
