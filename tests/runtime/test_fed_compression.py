"""The Flower side of fed-compress without a federation: the client mod and the server strategy, one round
by hand (messages built as Flower builds them), checked against the codecs and the cost model."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Error, Message, Metadata, MetricRecord, RecordDict

from kernels.compression import decode_topk, encode_topk, recover_download, unpack_stream
from runtime.fed.compression import (ARRAYS_KEY, DOWN_KEY, METRICS_KEY, PREV_KEY, RESIDUAL_KEY, UP_KEY,
                                     ClientRound, CodecSettings, CompressedFedAvg, compression_mod, dense_record,
                                     state_dict_of, stream_of)
from solvers.fed_compress.cost import download_bytes, upload_bytes

@pytest.fixture(autouse=True)
def client_process_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower sets the task identity in a client process before a ClientApp runs; replies need it."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 10)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


SHAPES = {"conv.weight": (32, 16, 3, 3), "conv.bias": (32,), "fc.weight": (64, 512), "fc.bias": (64,)}


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}


def _as_received(msg: Message, node: int, mid: str) -> Message:
    """A server message as a client receives it (Flower fills in the metadata on the way)."""
    md = Metadata(run_id=1, message_id=mid, src_node_id=0, dst_node_id=node, reply_to_message_id="", group_id="",
                  created_at=time.time(), ttl=3600.0, message_type=msg.metadata.message_type)
    return Message(content=msg.content, metadata=md)


def _reply_from(reply: Message, node: int) -> Message:
    md = Metadata(run_id=1, message_id="r", src_node_id=node, dst_node_id=0, reply_to_message_id="m", group_id="",
                  created_at=time.time(), ttl=3600.0, message_type="train")
    if reply.has_error():
        return Message(error=reply.error, metadata=md)
    return Message(content=reply.content, metadata=md)


def _trainer(shift: float, fail: bool = False):
    """A fake training handler: w_end = w_start − shift·sign(w_start); optionally fails."""
    def call_next(message: Message, context: Context) -> Message:
        if fail:
            raise RuntimeError("emulated dropout")
        w = state_dict_of(message.content.array_records[ARRAYS_KEY])
        w_end = {k: v - shift * torch.sign(v) for k, v in w.items()}
        return Message(content=RecordDict({ARRAYS_KEY: dense_record(w_end),
                                           METRICS_KEY: MetricRecord({"num-examples": 10})}), reply_to=message)
    return call_next


def _strategy(codec: CodecSettings, initial: dict[str, torch.Tensor], keep_down: float, keep_up: float):
    """Round 1: every client's first contact (dense download); round 2: a and b at `keep_down`."""
    clients = ["a", "b", "c"]
    schedule = {1: {c: ClientRound(1.0, 1.0, 16, predicted={}) for c in clients},   # dense: no EF residual yet
                2: {c: ClientRound(keep_down, keep_up, 16, predicted={}) for c in clients[:2]}}
    links = {c: {"downlink-bytes-per-s": 1e6, "uplink-bytes-per-s": 2e5, "latency-s": 0.01} for c in clients}
    return CompressedFedAvg(schedule, {c: 10 + i for i, c in enumerate(clients)}, {"a": 10, "b": 30, "c": 60}, codec,
                            {"local-iters": 2, "lr": 0.1}, links, initial, {c: i for i, c in enumerate(clients)})


def _first_contact(strat: CompressedFedAvg, contexts: dict[int, Context], w: dict[str, torch.Tensor]) -> None:
    """Round 1: dense downloads (nothing installed before), every client trains by a fixed step."""
    numels = [int(np.prod(s)) for s in SHAPES.values()]
    replies = []
    for i, msg in enumerate(strat.configure_train(1, dense_record(w), ConfigRecord(), grid=None)):
        node = msg.metadata.dst_node_id
        assert stream_of(msg.content.array_records[DOWN_KEY]).size == download_bytes(numels, 1.0) == 4 * sum(numels)
        replies.append(_reply_from(compression_mod(_as_received(msg, node, f"f{i}"), contexts[node], _trainer(0.002)), node))
    strat.aggregate_train(1, replies)
    assert strat.records[1]["answered"] == 3


@pytest.mark.parametrize("error_feedback", [False, True])
def test_one_round_through_the_mod_and_the_strategy(error_feedback: bool) -> None:
    initial = _weights(0)
    codec = CodecSettings(error_feedback=error_feedback, diagnostics=error_feedback)   # diagnostics in one case
    strat = _strategy(codec, initial, keep_down=0.6, keep_up=0.3)
    contexts = {n: Context(1, n, {}, RecordDict(), {}) for n in (10, 11, 12)}
    _first_contact(strat, contexts, initial)
    prev = {n: state_dict_of(ctx.state.array_records[PREV_KEY]) for n, ctx in contexts.items()}
    numels = [int(np.prod(s)) for s in SHAPES.values()]
    global_w = {k: v + 0.05 for k, v in initial.items()}       # the server's model has moved since round 1
    strat.schedule[2]["c"] = ClientRound(0.6, 0.3, 16, predicted={})
    msgs = list(strat.configure_train(2, dense_record(global_w), ConfigRecord(), grid=None))
    assert len(msgs) == 3
    replies = []
    for i, msg in enumerate(msgs):
        node = msg.metadata.dst_node_id
        # the download payload is one uint8 stream of exactly the cost model's bytes
        assert stream_of(msg.content.array_records[DOWN_KEY]).size == download_bytes(numels, 0.6)
        fail = node == 12
        if fail:     # the handler raises; Flower turns that into an error reply
            with pytest.raises(RuntimeError, match="emulated dropout"):
                compression_mod(_as_received(msg, node, f"m{i}"), contexts[node], _trainer(0.0, True))
            md = Metadata(run_id=1, message_id="r", src_node_id=node, dst_node_id=0, reply_to_message_id="m",
                          group_id="", created_at=time.time(), ttl=3600.0, message_type="train")
            replies.append(Message(error=Error(code=1, reason="emulated dropout"), metadata=md))
            continue
        reply = compression_mod(_as_received(msg, node, f"m{i}"), contexts[node], _trainer(0.01 * (i + 1)))
        assert stream_of(reply.content.array_records[UP_KEY]).size == upload_bytes(numels, 0.3)
        state = contexts[node].state
        assert PREV_KEY in state.array_records and (RESIDUAL_KEY in state.array_records) == error_feedback
        replies.append(_reply_from(reply, node))
    new, metrics = strat.aggregate_train(2, replies)
    rec = strat.records[2]
    assert rec["answered"] == 2 and rec["dropped"] == 1
    assert rec["clients"]["c"]["status"] == "dropped" and "emulated dropout" in rec["clients"]["c"]["error"]
    # the aggregate is w − Σ α_i Δ̃_i over the clients that answered (α by samples: a 10, b 30)
    expected = {k: v.clone() for k, v in global_w.items()}
    for client, shift in (("a", 0.01), ("b", 0.02)):
        node = strat.nodes[client]
        w_start = {k: recover_download(p, prev[node][k]) for k, p in zip(SHAPES, unpack_stream(
            stream_of(msgs[node - 10].content.array_records[DOWN_KEY]), "download", list(SHAPES.values()), 0.6))}
        alpha = {"a": 10 / 40, "b": 30 / 40}[client]
        for k in SHAPES:
            delta = w_start[k] - (w_start[k] - shift * torch.sign(w_start[k]))
            expected[k] -= alpha * decode_topk(encode_topk(delta, 0.3))
    got = state_dict_of(new)
    for k in SHAPES:
        assert torch.allclose(got[k], expected[k], atol=1e-6)
    # the devices that answered synced in round 2; the dropped one last synced in round 1
    assert strat.last_sync == {"a": 2, "b": 2, "c": 1}
    row = rec["clients"]["a"]
    assert row["down_payload_bytes"] == download_bytes(numels, 0.6) and row["up_payload_bytes"] == upload_bytes(numels, 0.3)
    assert row["dev_recovery_estimate"] < row["dev_sign_mean_estimate"]
    if codec.diagnostics:   # the dense model travels beside the payload for the diagnostic only: bytes unchanged
        assert 0 < row["dev_recovery_true"] < row["dev_sign_mean_true"]
        assert row["down_serialised_bytes"] == row["down_payload_bytes"] + 128
    else:
        assert "dev_recovery_true" not in row


def test_messages_without_caesar_records_pass_through() -> None:
    ctx = Context(1, 5, {}, RecordDict(), {})
    msg = Message(content=RecordDict({"config": ConfigRecord({"x": 1})}), message_type="query", dst_node_id=5)
    seen = []

    def call_next(m: Message, c: Context) -> Message:
        seen.append(m)
        return Message(content=RecordDict({METRICS_KEY: MetricRecord({"ok": 1})}), reply_to=m)

    reply = compression_mod(_as_received(msg, 5, "q"), ctx, call_next)
    assert seen and reply.content.metric_records[METRICS_KEY]["ok"] == 1 and not ctx.state.array_records


def test_a_client_without_a_model_refuses_a_compressed_first_download() -> None:
    initial = _weights(1)
    strat = _strategy(CodecSettings(), initial, 0.5, 0.5)
    msg = list(strat.configure_train(2, dense_record(initial), ConfigRecord(), grid=None))[0]
    with pytest.raises(RuntimeError, match="first download must be the dense model"):
        compression_mod(_as_received(msg, 10, "m"), Context(1, 10, {}, RecordDict(), {}), _trainer(0.1))
