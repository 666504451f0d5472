"""Batch decode as B independent sequences (docs/moe-offload.md §2): a step activates the union of the batch's
experts, in the statistics the cost model reads, in the simulator and in the floor; plans are chosen on
calibration sequences and scored on disjoint held-out ones."""
from __future__ import annotations

import numpy as np
import pytest

from planner.families.moe_offload.lowering import MoeOffloadOptions, lower, sim_window, simulate_solution
from planner.registry import resolve_hardware, resolve_model
from profilers.graph import profile_model
from profilers.moe import batch_view, sequence_bounds, split_parts, trace_stats
from profilers.synthetic_traces import generate_trace
from solvers.moe_offload.moepic import MoEpicConfig, solve


def _union_sizes(trace, bounds, batch: int) -> list[list[int]]:
    """Oracle: per step of each group of `batch` consecutive sequences, the size of the union of their experts."""
    out = []
    for g in range(len(bounds) // batch):
        members = bounds[g * batch:(g + 1) * batch]
        n = min(b - a for a, b in members)
        for t in range(n):
            out.append([len(set().union(*(set(trace.experts[a + t, i].tolist()) for a, _ in members)))
                        for i in range(trace.num_layers)])
    return out


@pytest.mark.parametrize("batch", [1, 2, 4, 8])
def test_batch_view_is_the_union_of_independent_sequences(batch: int) -> None:
    trace = generate_trace(3, 8, 2, "moepic-calibrated", tokens=16 * 40, seed=2, sequences=16)
    bounds = sequence_bounds(trace)
    assert len(bounds) == 16 and all(b - a == 40 for a, b in bounds)
    cal, held, _ = split_parts(trace)
    assert not set(cal) & set(held)
    view = batch_view(trace, held, batch, "held-out")
    want = np.array(_union_sizes(trace, held, batch), dtype=float)
    got = (view.experts >= 0).sum(axis=2)
    np.testing.assert_array_equal(got, want)
    for t in range(view.num_tokens):          # the rows hold exactly the union, no duplicates
        for i in range(view.num_layers):
            row = [int(e) for e in view.experts[t, i] if e >= 0]
            assert len(row) == len(set(row))
    np.testing.assert_allclose(trace_stats(view).distinct_per_step, want.mean(axis=0))


@pytest.fixture(scope="module")
def mixtral():
    return profile_model(resolve_model("mixtral-8x7b"), with_graph=False).moe


@pytest.mark.parametrize("batch", [1, 4, 8])
def test_modelled_distinct_experts_equal_the_traces(mixtral, batch: int) -> None:
    opts = MoeOffloadOptions(batch=batch, trace_tokens=1024, trace_sequences=16, sim_tokens=128, prompt_tokens=0,
                             objective="tpot")
    low = lower(mixtral, "mixtral-8x7b", resolve_hardware("a100_24gb"), opts)
    cal, _, _ = split_parts(low.trace)
    want = np.array(_union_sizes(low.trace, cal, batch), dtype=float).mean(axis=0)
    np.testing.assert_allclose(low.problem.distinct_experts, want)
    if batch == 8:
        # eight Mixtral sequences touch far more than top-2 experts per layer and step
        assert want.mean() > 5.0


def test_batch8_simulated_tpot_at_least_host_dram_time_of_its_misses(mixtral) -> None:
    opts = MoeOffloadOptions(batch=8, trace_tokens=1024, trace_sequences=16, sim_tokens=128, prompt_tokens=0,
                             objective="tpot")
    hw = resolve_hardware("a100_24gb")
    low = lower(mixtral, "mixtral-8x7b", hw, opts)
    p = low.problem
    plan = solve(p, MoEpicConfig(cpu_misses=True, split_misses=True))
    sim = simulate_solution(low, plan)
    P = p.host_dram_bytes_per_s
    # every expert a step activates that is not resident must be read from host DRAM (by the host or the link);
    # the plan's host and split layers keep a static set, so the non-resident bytes follow from the trace alone
    window = sim_window(low)
    static = low.final_orders["static"]
    dram = 0.0
    checked = 0
    for i in range(p.num_layers):
        if plan.miss_mode(i) not in ("host", "split"):
            continue
        checked += 1
        resident = set(static[i][: int(plan.capacities[i])])
        dram += sum(1 for row in window[:, i] for e in row if e >= 0 and int(e) not in resident) * p.expert_bytes
    assert checked == p.num_layers
    dram_s = dram / window.shape[0] / P
    assert sim.tpot_s >= dram_s
    # and the simulator's own DRAM traffic (link + host reads) agrees with the trace's count
    assert sim.bytes_per_token + sim.layer_host_bytes_per_token.sum() == pytest.approx(dram / window.shape[0], rel=1e-9)
    # batch 8 reads far more than batch 1 per step: the union, not top-2
    one = lower(mixtral, "mixtral-8x7b", hw, MoeOffloadOptions(batch=1, trace_tokens=1024, trace_sequences=16,
                                                               sim_tokens=128, prompt_tokens=0, objective="tpot"))
    assert p.distinct_experts.mean() > 2.5 * one.problem.distinct_experts.mean()


def test_held_out_part_is_other_sequences(mixtral) -> None:
    opts = MoeOffloadOptions(trace_tokens=1024, trace_sequences=16, sim_tokens=128, prompt_tokens=0, objective="tpot")
    low = lower(mixtral, "mixtral-8x7b", resolve_hardware("a100_24gb"), opts)
    cal, held, note = split_parts(low.trace)
    assert len(cal) == len(held) == 8 and not set(cal) & set(held)
    np.testing.assert_array_equal(low.calibration.experts, np.concatenate([low.trace.experts[a:b] for a, b in cal]))
    np.testing.assert_array_equal(low.heldout.experts, np.concatenate([low.trace.experts[a:b] for a, b in held]))
    assert "8 of the trace's 16 sequences" in note
