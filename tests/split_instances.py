"""Random split-inference instances (chains, series-parallel graphs, DAGs, chains of blocks) for solver
tests and the solver-time benchmark; no torch."""
from __future__ import annotations

import networkx as nx
import numpy as np

from solvers.split_inference.problem import SplitInferenceProblem

SMALL_BITS = (2, 4, 8, 16)


def make_problem(n: int, edges: list[tuple[int, int]], rng: np.random.Generator, bits: tuple[int, ...] = SMALL_BITS,
                 **overrides: object) -> SplitInferenceProblem:
    """Random stage times (device slower than cloud), activations of 2k-60k fp32 elements, monotone ΔAcc."""
    te = rng.uniform(1e-3, 4e-3, n)
    tc = te / rng.uniform(1.5, 6.0, n)
    elems = rng.integers(2_000, 60_000, n)
    native = np.full(n, 32)
    sens = rng.uniform(0.0005, 0.05, n)
    acc = np.array([[0.0 if b >= native[v] else sens[v] * 2.0 ** (-(b - 2)) for b in bits] for v in range(n)])
    is_input = np.zeros(n, dtype=bool)
    is_input[0] = True
    args: dict = dict(
        node_names=tuple(f"n{i}" for i in range(n)), edges=tuple(edges), is_input=is_input, output_node=n - 1,
        edge_time_s=te, cloud_time_s=tc, out_elements=elems, native_bits=native, quantizable=np.ones(n, dtype=bool),
        param_bytes=rng.uniform(1e4, 1e6, n), out_bytes=elems * 4.0, bits_options=tuple(bits), accuracy_drop=acc,
        bandwidth_bytes_per_s=float(rng.uniform(5e6, 1e8)), rtt_s=0.002, downlink_bytes_per_s=1e7,
        result_bytes=4000.0, edge_memory_bytes=1e12, quant_s_per_element_edge=2e-9, quant_s_fixed_edge=1e-5,
        dequant_s_per_element_cloud=5e-10, dequant_s_fixed_cloud=5e-6)
    args.update(overrides)
    return SplitInferenceProblem(**args)


def chain_edges(n: int) -> list[tuple[int, int]]:
    """Edges of a chain 0 -> 1 -> ... -> n-1."""
    return [(i, i + 1) for i in range(n - 1)]


def sp_edges(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """Two-terminal series-parallel DAG on n nodes: from one edge, subdivide an edge or add a 2-path beside it."""
    g = nx.DiGraph([(0, 1)])
    nxt = 2
    while g.number_of_nodes() < n:
        u, v = sorted(g.edges)[int(rng.integers(g.number_of_edges()))]
        if rng.random() < 0.5:
            g.remove_edge(u, v)
        g.add_edges_from([(u, nxt), (nxt, v)])
        nxt += 1
    index = {v: i for i, v in enumerate(nx.lexicographical_topological_sort(g))}
    return sorted((index[u], index[v]) for u, v in g.edges)


def random_dag(rng: np.random.Generator, n: int, p_edge: float = 0.3) -> list[tuple[int, int]]:
    """Connected DAG with local edges (not series-parallel in general); node n-1 is the only sink."""
    edges = set()
    for v in range(1, n):
        edges.add((int(rng.integers(max(0, v - 4), v)), v))
        edges.update((w, v) for w in range(max(0, v - 5), v) if rng.random() < p_edge)
    for u in range(n - 1):
        if not any(e[0] == u for e in edges):
            edges.add((u, int(rng.integers(u + 1, n))))
    return sorted(edges)


def chain_of_blocks(blocks: int) -> tuple[int, list[tuple[int, int]]]:
    """Alternating residual (a→b→c→d, a→d) and inception-style (a→{b1, b2→b3}→d) blocks."""
    edges, cur, nxt = [], 0, 1
    for k in range(blocks):
        if k % 2 == 0:
            b, c, d = nxt, nxt + 1, nxt + 2
            edges += [(cur, b), (b, c), (c, d), (cur, d)]
            nxt += 3
        else:
            b1, b2, b3, d = nxt, nxt + 1, nxt + 2, nxt + 3
            edges += [(cur, b1), (cur, b2), (b2, b3), (b1, d), (b3, d)]
            nxt += 4
        cur = d
    return nxt, edges
