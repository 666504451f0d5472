"""Measured timings on this machine (CPU), for plans whose cost model should match what runs here.

`calibrate_moe_decode` times the tiny same-architecture model through the runtime's split-expert
path with every segment resident: one decode step (median of `repeats`), one expert's compute at one
token, and the LM head; attention and router time per MoE layer is what remains of the step. These
replace the roofline constants when a plan is made with `--calibrate`.
"""
from __future__ import annotations

import random
import statistics
import time
from typing import Any, Callable

import torch


def median_s(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn` after one warm-up call (s)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def calibrate_moe_decode(model: torch.nn.Module, repeats: int = 20, context: int = 16) -> dict[str, Any]:
    """Seconds per decode step component of a (tiny, CPU) MoE model run through SplitExperts.

    Returns {"attention_s": [per MoE layer], "expert_s": t_x, "other_s": head and dense layers, "step_s"}.
    """
    import copy

    from kernels.moe_blocks import moe_blocks, swap_experts
    from kernels.split_experts import segment_forward

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the runtime runs tiny models (see runtime/moe_offload/run.py)
    m = copy.deepcopy(model).eval()
    blocks = moe_blocks(m)
    f = int(blocks[0].experts.down_proj.shape[-1])
    act = blocks[0].experts.act_fn
    k = int(getattr(m.config, "num_experts_per_tok", 2))
    swap_experts(m, [f] * len(blocks))
    vocab = int(m.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, context), generator=g)
    with torch.no_grad():
        out = m(input_ids=ids, use_cache=True)
        past = out.cache
        nxt = out.logits[:, -1:].argmax(-1)

        def step() -> None:
            m(input_ids=nxt, cache=past, use_cache=True)
            past.crop(-1)  # drop the token just added: the context length stays fixed across repeats

        step_s = median_s(step, repeats)
        seg = torch.randn(3, f, int(m.config.hidden_size), generator=g)
        x = torch.randn(1, int(m.config.hidden_size), generator=g)
        expert_s = median_s(lambda: segment_forward(x, seg, act), repeats * 5)
        head = m.get_output_embeddings()
        h = torch.randn(1, 1, int(m.config.hidden_size), generator=g)
        other_s = median_s(lambda: head(h), repeats * 5)
    torch.set_num_threads(threads)
    moe_layers = len(blocks)
    per_layer = max((step_s - other_s - moe_layers * k * expert_s) / moe_layers, 0.0)
    return {"attention_s": [per_layer] * moe_layers, "expert_s": expert_s, "other_s": other_s, "step_s": step_s,
            "source": f"measured on this CPU: tiny model through the split-expert path, median of {repeats} decode steps"}


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}
"""The clocks a calibration can be taken in: `wall` (time.perf_counter: what the call took on this host as loaded,
waits for a busy core included) or `cpu` (time.thread_time: the CPU time of the calling thread, what a core of
its own would spend; on a shared host the wall time moved x0.25-x3 within minutes while the CPU time stayed
within ~15 %, docs/split-inference.md §6)."""


def time_forward(built: Any, repeats: int = 7, threads: int = 1, clock: str = "wall",
                 other: list[float] | None = None) -> list[float]:
    """Seconds (`clock`: "wall" or "cpu") of `repeats` direct calls of the model's exported GraphModule after one
    warm-up, `threads` intra-op threads: the same call `time_graph_nodes` sets its level from (`forward`), on its
    own. `other`, when given, receives the same calls timed on the other clock."""
    from profilers.graph import capture

    gm = capture(built).program.module()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _direct_calls(gm, built, repeats, clock, other)
    finally:
        torch.set_num_threads(before)


def _direct_calls(gm: Any, built: Any, repeats: int, clock: str = "wall", other: list[float] | None = None) -> list[float]:
    """Seconds (`clock`) of `repeats` direct calls of `gm` on `built`'s inputs after one warm-up, without autograd;
    the other clock's seconds of the same calls are appended to `other` when given."""
    tick, tock = CLOCKS[clock], CLOCKS["cpu" if clock == "wall" else "wall"]
    out = []
    with torch.no_grad():
        gm(*built.args, **built.kwargs)
        for _ in range(repeats):
            t0, u0 = tick(), tock()
            gm(*built.args, **built.kwargs)
            out.append(tick() - t0)
            if other is not None:
                other.append(tock() - u0)
    return out


def time_graph_nodes(built: Any, repeats: int = 7, threads: int = 1, totals: list[float] | None = None,
                     forward: list[float] | None = None, passes: int = 3, clock: str = "wall",
                     forward_other: list[float] | None = None) -> dict[str, float]:
    """Seconds of every node of the model's exported graph, run on this CPU with `threads` intra-op threads
    (1: as the split runtime runs each half, one thread per process).

    An fx Interpreter times each `run_node`; the whole graph runs `repeats` times after one warm-up, in each of
    `passes` passes on a fresh capture. A node's time is its fastest run (the least disturbed by other processes), the operators' times scaled by one factor
    so that they sum to the median time of the whole GraphModule called directly (`repeats` calls after the Interpreter
    runs): the share of each node from its cleanest measurement, the level from the graph run as a program on
    the host as loaded (the Interpreter's own per-node cost made ResNet-50 2x slower than the runtime ran it);
    placeholders, weight fetches, the output and export's input guard get 0. (Per-node medians on a loaded 2-core host gave identical MiniLM linears 2 ms or 18 ms,
    whichever a preemption hit in most runs, and mis-split the model between edge and cloud by 2-3x.) When
    `totals` is given, each run's sum of node times (s) is appended to it (the calibration's spread).
    `clock` "cpu" times every node and direct call in this thread's CPU time instead of wall time (a core of its
    own: waiting for a busy core is not counted); `forward_other` receives the direct calls on the other clock.
    """
    from torch import fx

    from profilers.graph import capture

    times: dict[str, list[float]] = {}

    tick = CLOCKS[clock]

    class Timer(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            t0 = tick()
            out = super().run_node(n)
            times.setdefault(n.name, []).append(tick() - t0)
            return out

    flat = list(built.args) + [v for v in built.kwargs.values() if isinstance(v, torch.Tensor)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    direct: list[float] = []
    rng = random.Random(0)
    try:
        # `passes` independent passes, each on a freshly captured graph (its own allocations), a node's time the
        # fastest over all of them: one MiniLM calibration on the loaded host kept three of its six identical FFN
        # linears at 4-8x their siblings in their FASTEST of 7 back-to-back runs (75 ms vs 9 ms), which moved a
        # fifth of the model's time from the edge half to the cloud half of every cut (measured in isolation: edge
        # halves at +80-125 % of their planned share); a re-run showed such an outlier in one pass of three, the
        # same node normal in the other two. A pause of a random fraction of a run follows each run.
        for _ in range(passes):
            gm = capture(built).program.module()
            with torch.no_grad():
                Timer(gm).run(*flat)
                for v in times.values():
                    v.pop()                      # the warm-up run's time
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    Timer(gm).run(*flat)
                    time.sleep(rng.uniform(0.0, time.perf_counter() - t0))
            # the level: the graph as a program runs it (one call of the GraphModule, as the runtime's halves run),
            # interleaved with nothing else; node by node through the Interpreter measured ResNet-50 at 2x that
            direct.extend(_direct_calls(gm, built, repeats, clock, forward_other))
    finally:
        torch.set_num_threads(before)
    runs = [sum(v[r] for v in times.values() if len(v) > r) for r in range(repeats * passes)]
    if totals is not None:
        totals.extend(runs)
    if forward is not None:
        forward.extend(direct)
    # only operators carry the level: in the Interpreter every placeholder, weight fetch (get_attr), the output and
    # export's input guard (`_guards_fn`, which codegen drops) cost ~5-20 us each, in a direct call nothing. Scaled
    # with the operators they took 40 % of digits-cnn's 0.26 ms forward and the plan predicted its stages at 0.6x
    ops = {n.name for n in gm.graph.nodes
           if n.op in ("call_function", "call_method", "call_module") and n.target != "_guards_fn"}
    fastest = {k: (min(v) if k in ops else 0.0) for k, v in times.items()}
    total = sum(fastest.values())
    scale = statistics.median(direct) / total if total > 0 else 1.0
    return {k: t * scale for k, t in fastest.items()}
