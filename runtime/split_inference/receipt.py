"""The split-inference receipt: what the runtime measured, next to what the plan predicted.

Rows: one per partition the run used (the plan's, and any it switched to), with the measured stage
times (edge incl. emulation, link = transfer + one-way delay, cloud, return leg), bytes per request and
the plan's figures for that partition. Totals: throughput (steady state: answers after the first few,
divided by their span), latency percentiles, bytes, accuracy against the labels and agreement with the
unsplit fp32 model, semantic-cache hits and their accuracy, plan-table switches, reconnects and
resends. `flags` lists rows where measured and predicted differ by more than 20 %.
"""
from __future__ import annotations

import statistics
from typing import Any, Sequence

import torch

from runtime.receipt import Receipt
from runtime.split_inference.artifact import Artifact
from runtime.split_inference.pipeline import EdgeResult, RequestRecord


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    v = sorted(values)
    k = (len(v) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def steady_throughput(records: Sequence[RequestRecord]) -> float:
    """Answers per second after the first `warm` answers (pipeline fill), over their span."""
    t = sorted(r.result_at for r in records)
    if len(t) < 2:
        return 0.0
    warm = min(2, len(t) // 5)
    span = t[-1] - t[warm]
    return (len(t) - 1 - warm) / span if span > 0 else float("inf")


def _ms(x: float) -> float:
    return round(x * 1e3, 4)


def build_receipt(art: Artifact, result: EdgeResult, config: str, link_label: str,
                  labels: torch.Tensor | None = None, reference: torch.Tensor | None = None) -> Receipt:
    """Receipt of one run (see the module docstring)."""
    recs = result.records
    rows = []
    for pid in result.partitions_used:
        part = art.partition(pid)
        mine = [r for r in recs if r.partition == pid]
        cloud = [r for r in mine if r.answered_by == "cloud"]
        pred = part.predicted
        row: dict[str, Any] = {"name": pid, "requests": len(mine),
                               "cut": ", ".join(f"{w.name}@{w.bits or 'raw'}" for w in part.wire) or "(all on the edge)",
                               "edge_ms": _ms(statistics.fmean(r.edge_compute_s + r.edge_sleep_s for r in mine)),
                               "edge_compute_ms": _ms(statistics.fmean(r.edge_compute_s for r in mine)),
                               "edge_cpu_ms": _ms(statistics.fmean(r.edge_cpu_s for r in mine)),
                               "edge_overrun_share": round(sum(r.edge_compute_s > r.edge_target_s > 0 for r in mine)
                                                           / len(mine), 4),
                               "edge_ms_predicted": pred.get("edge_ms")}
        if cloud:
            row.update({"link_ms": _ms(statistics.fmean(r.link_s for r in cloud)),
                        "link_ms_predicted": pred.get("link_ms"),
                        "cloud_ms": _ms(statistics.fmean(r.cloud_done - r.cloud_start for r in cloud)),
                        "cloud_ms_predicted": pred.get("cloud_ms"),
                        "return_ms": _ms(statistics.fmean(r.result_at - r.cloud_done for r in cloud)),
                        "bytes_per_request": statistics.fmean(r.frame_bytes for r in cloud),
                        "payload_bytes": part.wire_bytes,
                        "bytes_per_request_predicted": pred.get("bytes_per_request")})
        rows.append(row)
    lat = [r.latency_s for r in recs]
    first = art.config_partition(config)
    pred = first.predicted
    thr = steady_throughput(recs)
    by = {k: sum(1 for r in recs if r.answered_by == k) for k in ("cloud", "edge", "cache")}
    totals: dict[str, Any] = {
        "config": config, "partition": first.pid, "requests": len(recs), "answered_by": by,
        "throughput_rps": round(thr, 4),
        "throughput_rps_predicted": pred.get("throughput_rps"),
        "period_ms": _ms(1.0 / thr) if thr > 0 else None, "period_ms_predicted": pred.get("period_ms"),
        "latency_ms_p50": _ms(percentile(lat, 50)), "latency_ms_p90": _ms(percentile(lat, 90)),
        "latency_ms_p99": _ms(percentile(lat, 99)), "latency_ms_mean": _ms(statistics.fmean(lat)) if lat else 0.0,
        "latency_ms_predicted": pred.get("latency_ms"),
        "bytes_per_request": statistics.fmean([r.frame_bytes for r in recs]) if recs else 0.0,
        "bytes_per_request_predicted": pred.get("bytes_per_request"),
        "wall_s": round(result.wall_s, 3), "emulation": result.emulation,
        "switches": [vars(s) for s in result.switches],
        "bandwidth_estimate_bits_per_s": result.bandwidth_estimates[-1][1] if result.bandwidth_estimates else None,
        "probes": result.probes, "probe_bytes": result.probe_bytes,
    }
    ls = result.link_stats
    if ls is not None:
        totals.update({"reconnects": ls.reconnects, "resent": ls.resent, "duplicates_dropped": ls.duplicates_dropped,
                       "handshake_rtt_ms": _ms(ls.handshake_rtt_s), "clock_offset_ms": _ms(ls.clock_offset_s),
                       "bytes_sent": ls.bytes_sent, "bytes_received": ls.bytes_received,
                       "reconnect_log": list(ls.reconnect_log)})
    n = len(recs)
    got = [r.label for r in recs]
    if labels is not None and n and all(g is not None for g in got):
        y = labels[:n].tolist()
        acc = sum(int(g == t) for g, t in zip(got, y)) / n
        totals["accuracy"] = round(acc, 6)
        if reference is not None:
            ref_labels = reference[:n].reshape(n, -1).argmax(-1).tolist()
            ref_acc = sum(int(a == b) for a, b in zip(ref_labels, y)) / n
            totals["accuracy_fp32_unsplit"] = round(ref_acc, 6)
            totals["accuracy_drop"] = round(ref_acc - acc, 6)
        cached = [(g, t) for r, g, t in zip(recs, got, y) if r.answered_by == "cache"]
        rest = [(g, t) for r, g, t in zip(recs, got, y) if r.answered_by != "cache"]
        if cached:
            totals["cache_accuracy"] = round(sum(int(g == t) for g, t in cached) / len(cached), 6)
        if rest and cached:
            totals["non_cache_accuracy"] = round(sum(int(g == t) for g, t in rest) / len(rest), 6)
    if reference is not None and n:
        if all(g is not None for g in got):
            ref_labels = reference[:n].reshape(n, -1).argmax(-1).tolist()
            totals["agreement_with_fp32"] = round(sum(int(a == b) for a, b in zip(got, ref_labels)) / n, 6)
        elif all(r.summary is not None for r in recs):
            s = torch.stack([r.summary for r in recs])
            cos = torch.nn.functional.cosine_similarity(s, reference[:n].reshape(n, -1).float(), dim=-1)
            totals["mean_cosine_to_fp32"] = round(float(cos.mean()), 6)
    totals["accuracy_drop_predicted"] = pred.get("accuracy_drop")
    totals["accuracy_kind_predicted"] = pred.get("accuracy_kind")
    if result.cache_lookups:
        totals.update({"cache_lookups": result.cache_lookups, "cache_hits": result.cache_hits,
                       "cache_hit_rate": round(result.cache_hits / result.cache_lookups, 6)})
    receipt = Receipt(family="split-inference", config=config, link=link_label, rows=rows, totals=totals)
    receipt.flag_differences((("edge_ms", "edge_ms_predicted"), ("link_ms", "link_ms_predicted"),
                              ("cloud_ms", "cloud_ms_predicted")))
    return receipt
