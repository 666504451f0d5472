"""Per-client compression for Flower, both directions: a server strategy and a client mod.

Flower ships no update compression and sends one training config to every client; this module
adds both, in Flower's own extension points, for any model whose weights travel as an ArrayRecord:

* `CompressedFedAvg` (a `flwr.serverapp.strategy.FedAvg`): `configure_train` sends each selected
  client its own message: the global model encoded with Caesar's download codec at that client's
  kept fraction (`kernels.compression`), its own codec settings and its own training config;
  `aggregate_train` decodes each client's sparse or quantised update and applies
  `w ← w − Σ α_i·Δ̃_i` with `α_i = n_i / Σ n` over the clients that answered. Clients that fail or
  time out are recorded as dropped and the round goes on (Flower returns their error replies).
* `compression_mod` (a Flower client mod, `mod(message, context, call_next)`): rebuilds the dense
  model from the download payload and the client's previous local model (kept in `context.state`,
  so it survives between rounds), hands the dense model to the training handler, then encodes the
  update `Δ = w_start − w_end` (top-k with an optional per-client error-feedback residual, or
  stochastic quantisation) and stores `w_end` as the next previous model.

What crosses the wire per message is ONE uint8 array holding every tensor's payload
(`pack_stream`): its length is the cost model's byte count exactly. Flower serialises it with a
128-byte numpy header; both figures are recorded. Nothing is installed before round 1: a device's
first download is the dense model (docs/fed-compress.md, "Accounting"), and only that message also
names the tensors and their shapes (config scalars, a few hundred bytes, not counted for any
configuration), so every byte of model state a device ever holds is counted traffic.

The server also keeps a shadow of every client's previous model (the recovered start model it
simulated minus the update it received, an approximation; docs/fed-compress.md, "Runtime") to
estimate, per client and round, the relative deviation of the client's rebuilt model with recovery
and with sign·mean only.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")   # nothing outside this machine is reachable; read at import

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from kernels.compression import (DOWNLOAD, UPLOAD_QUANT, UPLOAD_TOPK, Payload,  # noqa: E402
                                 compress_with_feedback, decode_stochastic, decode_topk, encode, pack_stream,
                                 recover_download, relative_deviation, unpack_stream)

log = logging.getLogger(__name__)

DOWN_KEY = "caesar.down"        # ArrayRecord {"payload": uint8}: the encoded global model
UP_KEY = "caesar.up"            # ArrayRecord {"payload": uint8}: the encoded update
CODEC_KEY = "caesar.codec"      # ConfigRecord: this client's codec settings for this round
LAYOUT_KEY = "caesar.layout"    # ConfigRecord: tensor names and shapes, sent with a device's first (dense) download
DIAG_KEY = "caesar.diagnostic"  # ArrayRecord: the dense global model, DIAGNOSTIC runs only, never counted as traffic
PREV_KEY = "caesar.w_prev"      # context.state: the client's previous local model
RESIDUAL_KEY = "caesar.residual"  # context.state: error-feedback residual
ARRAYS_KEY, CONFIG_KEY, METRICS_KEY = "arrays", "config", "metrics"
NPY_HEADER_BYTES = 128


@dataclass(frozen=True)
class ClientRound:
    """One client's settings for one round (kept fractions in (0, 1]; `drop` emulates a mid-round failure)."""

    keep_down: float
    keep_up: float
    batch: int
    drop: bool = False
    predicted: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CodecSettings:
    """How this run encodes: upload codec ("topk" or "quant"), its bits, error feedback, device recovery."""

    up_codec: str = UPLOAD_TOPK
    quant_bits: int = 0
    error_feedback: bool = False
    recovery: bool = True
    min_numel: int = 1024
    seed: int = 0
    diagnostics: bool = False   # also send the dense model (uncounted) so clients report their true deviation


# ---------------------------------------------------------------- records
def stream_record(buf: np.ndarray) -> ArrayRecord:
    """One uint8 array under "payload"."""
    return ArrayRecord(array_dict={"payload": Array.from_numpy_ndarray(np.ascontiguousarray(buf, dtype=np.uint8))})


def stream_of(record: ArrayRecord) -> np.ndarray:
    """The uint8 payload array of a record made by `stream_record`."""
    return np.asarray(record["payload"].numpy(), dtype=np.uint8).reshape(-1)


def serialised_bytes(record: ArrayRecord) -> int:
    """Bytes Flower serialises for the record's arrays (npy header included)."""
    return int(sum(len(a.data) for a in record.values()))


def state_dict_of(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Dense fp32 tensors of an ArrayRecord, in its order."""
    return {k: v.detach().to(torch.float32).clone() for k, v in record.to_torch_state_dict().items()}


def dense_record(weights: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """An ArrayRecord of dense tensors (the model between the mod and the training handler)."""
    return ArrayRecord(torch_state_dict={k: v.detach().contiguous() for k, v in weights.items()})


def layout_record(weights: Mapping[str, torch.Tensor]) -> ConfigRecord:
    """Tensor names and shapes (flattened, with each tensor's rank) for a device that holds no model yet."""
    shapes = [tuple(t.shape) for t in weights.values()]
    return ConfigRecord({"names": list(weights), "ranks": [len(s) for s in shapes],
                         "dims": [int(d) for s in shapes for d in s]})


def _layout(record: Mapping[str, Any]) -> tuple[list[str], list[tuple[int, ...]]]:
    dims, shapes, at = list(record["dims"]), [], 0
    for r in record["ranks"]:
        shapes.append(tuple(int(d) for d in dims[at:at + int(r)]))
        at += int(r)
    return [str(n) for n in record["names"]], shapes


def _codec_config(rnd: int, client: ClientRound, codec: CodecSettings, client_index: int) -> ConfigRecord:
    return ConfigRecord({"keep-down": float(client.keep_down), "keep-up": float(client.keep_up),
                         "up-codec": codec.up_codec, "quant-bits": int(codec.quant_bits),
                         "error-feedback": bool(codec.error_feedback), "recovery": bool(codec.recovery),
                         "min-numel": int(codec.min_numel), "quant-seed": int(codec.seed * 1_000_003 + rnd * 1009 + client_index)})


def _up_ratio(cfg: Mapping[str, Any]) -> float:
    return float(cfg["quant-bits"]) if cfg["up-codec"] == UPLOAD_QUANT else float(cfg["keep-up"])


def _decode_up(payload: Payload, up_codec: str) -> torch.Tensor:
    return decode_stochastic(payload) if up_codec == UPLOAD_QUANT else decode_topk(payload)


def error_line(reason: str) -> str:
    """The client's own exception line out of Flower's (or Ray's) wrapped error text, ANSI colours removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", reason)
    lines = [ln.strip() for ln in text.splitlines() if re.match(r"\s*[\w.]*(Error|Exception): \S", ln)]
    return (lines[-1] if lines else text.strip().splitlines()[0] if text.strip() else "error")[:200]


# ---------------------------------------------------------------- client mod
def compression_mod(message: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Flower client mod: decode the download, train densely (call_next), encode the upload.

    Messages without Caesar records pass through untouched. A client that holds no model yet must get
    the dense model (kept fraction 1) with the tensor layout; it has nothing to rebuild from.
    """
    content = message.content
    if message.metadata.message_type != "train" or DOWN_KEY not in content.array_records:
        return call_next(message, context)
    cfg = dict(content.config_records[CODEC_KEY])
    if PREV_KEY in context.state.array_records:
        w_prev: dict[str, torch.Tensor] | None = state_dict_of(context.state.array_records[PREV_KEY])
        names, shapes = list(w_prev), [tuple(t.shape) for t in w_prev.values()]
    elif LAYOUT_KEY in content.config_records and float(cfg["keep-down"]) >= 1.0:
        w_prev = None
        names, shapes = _layout(content.config_records[LAYOUT_KEY])
    else:
        raise RuntimeError("this client holds no model yet, so its first download must be the dense model "
                           f"(kept fraction 1, not {cfg['keep-down']}) with the tensor layout")
    t0 = time.perf_counter()
    down = unpack_stream(stream_of(content.array_records[DOWN_KEY]), DOWNLOAD, shapes, float(cfg["keep-down"]),
                         int(cfg["min-numel"]))
    w_start = {n: recover_download(p, w_prev[n] if cfg["recovery"] and w_prev is not None else None)
               for n, p in zip(names, down)}
    decode_s = time.perf_counter() - t0
    diag = {}
    if DIAG_KEY in content.array_records:     # diagnostic runs: the true deviation of the rebuilt model
        w_true = state_dict_of(content.array_records[DIAG_KEY])
        flat_w = torch.cat([w_true[n].reshape(-1) for n in names])
        diag = {"dev-recovery-true": relative_deviation(flat_w, torch.cat([w_start[n].reshape(-1) for n in names])),
                "dev-sign-mean-true": relative_deviation(flat_w, torch.cat([recover_download(p, None).reshape(-1)
                                                                            for p in down]))}
    context.state[PREV_KEY] = dense_record(w_start)   # received: a device that fails while training still holds it
    inner = RecordDict({ARRAYS_KEY: dense_record(w_start), CONFIG_KEY: content.config_records[CONFIG_KEY]})
    message.content = inner
    reply = call_next(message, context)
    if reply.has_error():
        return reply
    w_end = state_dict_of(reply.content.array_records[ARRAYS_KEY])
    t0 = time.perf_counter()
    up_codec = str(cfg["up-codec"])
    ratio = _up_ratio(cfg)
    gen = torch.Generator().manual_seed(int(cfg["quant-seed"]))
    residual = (state_dict_of(context.state.array_records[RESIDUAL_KEY])
                if cfg["error-feedback"] and RESIDUAL_KEY in context.state.array_records else {})
    payloads, new_residual = [], {}
    for n in names:
        delta = w_start[n] - w_end[n]
        enc = (lambda x: encode(up_codec, x, ratio, int(cfg["min-numel"]), gen))
        if cfg["error-feedback"]:
            p, new_residual[n] = compress_with_feedback(delta, residual.get(n), enc, lambda q: _decode_up(q, up_codec))
        else:
            p = enc(delta)
        payloads.append(p)
    buf = pack_stream(payloads)
    encode_s = time.perf_counter() - t0
    context.state[PREV_KEY] = dense_record(w_end)
    if cfg["error-feedback"]:
        context.state[RESIDUAL_KEY] = dense_record(new_residual)
    up = stream_record(buf)
    metrics = dict(reply.content.metric_records.get(METRICS_KEY, MetricRecord({})))
    metrics.update({"up-payload-bytes": int(buf.size), "up-serialised-bytes": serialised_bytes(up),
                    "codec-s": decode_s + encode_s, **diag})
    reply.content = RecordDict({UP_KEY: up, METRICS_KEY: MetricRecord(metrics)})
    return reply


# ---------------------------------------------------------------- server strategy
@dataclass
class _Sent:
    client: str
    node: int
    settings: ClientRound
    payload_bytes: int
    serialised_bytes: int
    dev_recovery: float
    dev_sign_mean: float
    start_estimate: dict[str, torch.Tensor]
    staleness: int


class CompressedFedAvg(FedAvg):
    """FedAvg with per-client download/upload compression and per-client training configs.

    `schedule[t]` maps the client ids of round t to their `ClientRound`; `nodes` maps client ids to
    Flower node ids; `samples[client]` weighs the aggregate; `train_config` is sent to every client
    with the client's own `batch` and `drop` added; `links[client]` gives the emulated link
    ("downlink-bytes-per-s", "uplink-bytes-per-s", "latency-s").
    """

    def __init__(self, schedule: Mapping[int, Mapping[str, ClientRound]], nodes: Mapping[str, int],
                 samples: Mapping[str, int], codec: CodecSettings, train_config: Mapping[str, Any],
                 links: Mapping[str, Mapping[str, float]], initial: Mapping[str, torch.Tensor],
                 client_index: Mapping[str, int]) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1, min_evaluate_nodes=0,
                         min_available_nodes=1)
        self.schedule, self.nodes, self.samples = schedule, dict(nodes), dict(samples)
        self.codec, self.train_config, self.links = codec, dict(train_config), links
        self.client_index = dict(client_index)
        self.names = list(initial)
        self.shadow = {c: {k: v.clone() for k, v in initial.items()} for c in nodes}
        self.last_sync = {c: 0 for c in nodes}
        self.records: dict[int, dict[str, Any]] = {}
        self._sent: dict[int, dict[str, _Sent]] = {}

    def summary(self) -> None:
        """Flower prints a strategy summary at start; keep it to one log line."""
        log.info("CompressedFedAvg: %d rounds, upload codec %s", len(self.schedule), self.codec.up_codec)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """One message per client of this round: its encoded model, codec settings and training config."""
        self._t0 = time.perf_counter()
        w = state_dict_of(arrays)
        self._w = w
        msgs, sent = [], {}
        for client, settings in sorted(self.schedule.get(server_round, {}).items()):
            payloads = [encode(DOWNLOAD, w[n], settings.keep_down, self.codec.min_numel) for n in self.names]
            buf = pack_stream(payloads)
            rec = stream_record(buf)
            shadow = self.shadow[client]
            est = {n: recover_download(p, shadow[n] if self.codec.recovery else None) for n, p in zip(self.names, payloads)}
            sign_mean = {n: recover_download(p, None) for n, p in zip(self.names, payloads)}
            flat_w = torch.cat([w[n].reshape(-1) for n in self.names])
            dev_r = relative_deviation(flat_w, torch.cat([est[n].reshape(-1) for n in self.names]))
            dev_s = relative_deviation(flat_w, torch.cat([sign_mean[n].reshape(-1) for n in self.names]))
            train_cfg = {**self.train_config, "round": server_round, "batch": int(settings.batch),
                         "drop": bool(settings.drop)}
            content = RecordDict({DOWN_KEY: rec,
                                  CODEC_KEY: _codec_config(server_round, settings, self.codec, self.client_index[client]),
                                  CONFIG_KEY: ConfigRecord(train_cfg)})
            if settings.keep_down >= 1.0:
                content[LAYOUT_KEY] = layout_record(w)
            if self.codec.diagnostics:
                content[DIAG_KEY] = dense_record(w)
            msgs.append(Message(content=content, message_type="train", dst_node_id=self.nodes[client]))
            sent[client] = _Sent(client, self.nodes[client], settings, int(buf.size), serialised_bytes(rec), dev_r, dev_s,
                                 est, server_round - self.last_sync[client])
        self._sent[server_round] = sent
        return msgs

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode every answered update, average with sample weights, record the round."""
        sent = self._sent.get(server_round, {})
        by_node = {s.node: s for s in sent.values()}
        w = self._w
        ok: list[tuple[_Sent, dict[str, torch.Tensor], dict[str, Any]]] = []
        rows: dict[str, dict[str, Any]] = {}
        for reply in replies:
            s = by_node.get(int(reply.metadata.src_node_id))
            if s is None:
                continue
            row = self._row(s)
            if reply.has_error():
                row.update(status="dropped", error=error_line(str(reply.error.reason)))
                rows[s.client] = row
                continue
            metrics = dict(reply.content.metric_records.get(METRICS_KEY, MetricRecord({})))
            rec = reply.content.array_records[UP_KEY]
            buf = stream_of(rec)
            ratio = float(self.codec.quant_bits) if self.codec.up_codec == UPLOAD_QUANT else float(s.settings.keep_up)
            payloads = unpack_stream(buf, self.codec.up_codec, [tuple(w[n].shape) for n in self.names], ratio,
                                     self.codec.min_numel)
            delta = {n: _decode_up(p, self.codec.up_codec) for n, p in zip(self.names, payloads)}
            row.update(status="ok", up_payload_bytes=int(buf.size), up_serialised_bytes=serialised_bytes(rec),
                       **{k.replace("-", "_"): v for k, v in metrics.items() if k not in ("up-payload-bytes", "up-serialised-bytes")})
            rows[s.client] = row
            ok.append((s, delta, row))
        for client, s in sent.items():     # no reply at all (timeout): dropped
            if client not in rows:
                row = self._row(s)
                row.update(status="dropped", error="no reply before the timeout")
                rows[client] = row
        total = float(sum(self.samples[s.client] for s, _, _ in ok))
        new_w = {n: t.clone() for n, t in w.items()}
        for s, delta, row in ok:
            alpha = self.samples[s.client] / total
            for n in self.names:
                new_w[n] -= alpha * delta[n]
            # the shadow of the client's model is its simulated start model minus the update received
            # (docs/fed-compress.md, "Runtime")
            self.shadow[s.client] = {n: s.start_estimate[n] - delta[n] for n in self.names}
            self.last_sync[s.client] = server_round
        self._times(rows)
        self.records[server_round] = {"round": server_round, "clients": rows, "wall_s": time.perf_counter() - self._t0,
                                      "answered": len(ok), "dropped": sum(r["status"] == "dropped" for r in rows.values())}
        self._sent.pop(server_round, None)
        if not ok:
            return None, MetricRecord({"answered": 0})
        return dense_record(new_w), MetricRecord({"answered": len(ok)})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """No client-side evaluation: the server evaluates the global model on held-out data."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Nothing to aggregate (see `configure_evaluate`)."""
        return None

    # -------------------------------------------------------------- receipt rows
    def _row(self, s: _Sent) -> dict[str, Any]:
        link = self.links[s.client]
        return {"client": s.client, "staleness": s.staleness, "keep_down": s.settings.keep_down,
                "keep_up": s.settings.keep_up, "batch": s.settings.batch,
                "down_payload_bytes": s.payload_bytes, "down_serialised_bytes": s.serialised_bytes,
                "down_s_emulated": s.payload_bytes / float(link["downlink-bytes-per-s"]),
                "dev_recovery_estimate": s.dev_recovery, "dev_sign_mean_estimate": s.dev_sign_mean,
                "predicted": dict(s.settings.predicted), "dropped_by_plan": bool(s.settings.drop)}

    def _times(self, rows: dict[str, dict[str, Any]]) -> None:
        """Emulated per-client round time M_i and waiting time (answered clients only)."""
        finish = {}
        for client, row in rows.items():
            if row["status"] != "ok":
                continue
            link = self.links[client]
            row["up_s_emulated"] = row["up_payload_bytes"] / float(link["uplink-bytes-per-s"])
            row["time_s_emulated"] = (row.get("compute_s_emulated", 0.0) + row["down_s_emulated"]
                                      + row["up_s_emulated"] + float(link["latency-s"]))
            finish[client] = row["time_s_emulated"]
        t_round = max(finish.values(), default=0.0)
        for client, t in finish.items():
            rows[client]["waiting_s_emulated"] = t_round - t
