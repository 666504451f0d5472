"""Layer-wise LoRA aggregation over clients of different depths (docs/fed-lora.md, "Runtime"), as a Flower strategy.

The math is a free function: for every tensor, the new global value is the sample-weighted mean over
the clients that sent it this round (the clients that train its block); tensors nobody sent keep
their previous value. The accumulation order and dtype follow Flower's FedAvg
(`flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords`), so when every client trains every
block the result is FedAvg's, bit for bit.

`LayerwiseLoRA` is a `flwr.serverapp.strategy.Strategy` whose `configure_train` sends each node its
own `ConfigRecord` (never one object shared by all nodes) and only the tensors of the blocks it
trains, and whose `aggregate_train` applies `aggregate_layerwise` and keeps each client's reply
metrics for the receipt.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from kernels.lora_state import block_of

log = logging.getLogger(__name__)

ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"
WEIGHT_KEY = "num-examples"


def aggregate_layerwise(previous: Mapping[str, np.ndarray], updates: Sequence[tuple[Mapping[str, np.ndarray], float]]
                        ) -> dict[str, np.ndarray]:
    """Per tensor, Σ_i (n_i / Σ_{j sent it} n_j)·value_i over the updates that contain it; others unchanged."""
    totals: dict[str, float] = {}
    for arrays, n in updates:
        for k in arrays:
            totals[k] = totals.get(k, 0.0) + float(n)
    out: dict[str, np.ndarray] = {}
    for arrays, n in updates:
        for k, v in arrays.items():
            if totals[k] <= 0:
                continue
            factor = float(n) / totals[k]
            if k not in out:
                out[k] = v * factor
            else:
                out[k] += v * factor
    merged = {k: np.asarray(v) for k, v in previous.items()}
    merged.update(out)
    return merged


def keys_for_depth(keys: Iterable[str], blocks_path: str, num_blocks: int, depth: int) -> list[str]:
    """The exchange names a client of LoRA depth `depth` trains: its blocks' adapters and the head."""
    lo = num_blocks - depth
    out = []
    for k in keys:
        b = block_of(k, blocks_path)
        if b is None or b >= lo:
            out.append(k)
    return sorted(out)


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord -> {name: numpy array}."""
    return {k: v.numpy() for k, v in record.items()}


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """{name: numpy array} -> ArrayRecord."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


class LayerwiseLoRA(Strategy):
    """FedQuad's server strategy: per-node configs, per-depth payloads, layer-wise aggregation.

    `node_configs` maps a Flower node id to that client's own config (scalar values; `lora-depth` > 0);
    `blocks_path` and `num_blocks` locate block indices in tensor names. `receipts[round]` keeps each
    client's reply metrics by device id.
    """

    def __init__(self, node_configs: Mapping[int, Mapping[str, Any]], blocks_path: str, num_blocks: int,
                 on_replies: Callable[[int, dict[str, dict[str, Any]]], None] | None = None) -> None:
        self.node_configs = {int(k): dict(v) for k, v in node_configs.items()}
        self.blocks_path = blocks_path
        self.num_blocks = num_blocks
        self.on_replies = on_replies
        self.current: dict[str, np.ndarray] = {}
        self.receipts: dict[int, dict[str, dict[str, Any]]] = {}

    def summary(self) -> None:
        """Log the configuration."""
        depths = sorted(int(c["lora-depth"]) for c in self.node_configs.values())
        log.info("LayerwiseLoRA: %d clients, LoRA depths %s, %d blocks", len(depths), depths, self.num_blocks)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """One message per node: its own ConfigRecord and the tensors of the blocks it trains."""
        self.current = to_numpy(arrays)
        messages = []
        for node_id in sorted(self.node_configs):
            own = dict(self.node_configs[node_id])
            own.update({k: v for k, v in config.items() if k not in own})
            own["server-round"] = server_round
            keys = keys_for_depth(self.current, self.blocks_path, self.num_blocks, int(own["lora-depth"]))
            payload = to_record({k: self.current[k] for k in keys})
            messages.append(Message(content=RecordDict({ARRAYS: payload, CONFIG: ConfigRecord(own)}),
                                    message_type=MessageType.TRAIN, dst_node_id=node_id))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Layer-wise weighted mean of the replies; failed replies are logged and recorded, not averaged."""
        updates = []
        receipts: dict[str, dict[str, Any]] = {}
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            device = str(self.node_configs.get(node, {}).get("device-id", node))
            if msg.has_error():
                receipts[device] = {"error": str(msg.error.reason)}
                log.warning("client %s failed in round %d: %s", device, server_round, msg.error.reason)
                continue
            metrics = dict(msg.content[METRICS])
            updates.append((to_numpy(msg.content[ARRAYS]), float(metrics[WEIGHT_KEY])))
            receipts[device] = metrics
        self.receipts[server_round] = receipts
        if self.on_replies is not None:
            self.on_replies(server_round, receipts)
        if not updates:
            return None, None
        merged = aggregate_layerwise(self.current, updates)
        total = sum(n for _, n in updates)
        return to_record(merged), MetricRecord({"clients": len(updates), WEIGHT_KEY: total})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """No client-side evaluation: the server evaluates the global model on held-out data."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Nothing to aggregate (see `configure_evaluate`)."""
        return None
