"""COACH candidate cuts (docs/split-inference.md §3 step 2): recursive divide and conquer over the dominator chain.

    candidate_cuts(problem) -> CutCandidates: device-side masks S (downward closed, inputs in S)

A virtual source feeds every input and every sink feeds a virtual sink; the immediate dominators of
the virtual sink form the chain A = a_0 (virtual source), a_1, …, a_k (virtual sink). Every ideal S is
"open" in exactly one block K_j (the nodes strictly between a_j and a_{j+1}), so

    S = ancestors(a_j) ∪ {a_j} ∪ I,   I an ideal of K_j.

Ideals of a block: the product over its weakly connected branches of each branch's ideals, found by
recursing on branch ∪ {a_j, a_{j+1}} (the direct edge a_j → a_{j+1} removed); a single branch without an
internal cut vertex is irreducible and its ideals are enumerated: all if |K| ≤ 16 (COACH's limit) or, our
extension, if it has at most `max_block_ideals` of them; else the prefixes of its topological order plus
the DADS cut restricted to it. A block whose branch product exceeds `max_branch_combinations` is listed
reduced (each branch varying alone, others empty or full, plus prefixes and DADS). For series-parallel
graphs the result is every ideal that contains the inputs (docs/split-inference.md §3 step 2), and so it is for any DAG
whose irreducible blocks are all listed whole (`CutCandidates.complete`).

Nodes unreachable from every input (constants, buffers) take no part in the decomposition; each cut is
closed under predecessors afterwards, so such a node sits on the device exactly when one of its
consumers does. `dads_cut` is the min s–t cut of the DADS baseline (docs/split-inference.md §3; networkx max-flow).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Callable, Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from solvers.split_inference.cost import (GraphIndex, bits_of, dequantise_s, graph_index, quantise_s,
                                          tensor_bytes)
from solvers.split_inference.problem import SplitInferenceProblem


@dataclass(frozen=True)
class CutSettings:
    """Limits of the enumeration.

    max_exhaustive_block: |K| up to which an irreducible block's ideals are all listed (COACH: 16).
    max_block_ideals: a larger irreducible block is still listed whole when it has at most this many
        ideals; beyond, its topological prefixes and the DADS cut restricted to it.
    max_branch_combinations: cap on Π_branches |opts| in one block before the reduced listing.
    enumerate_small_blocks: list every ideal of a block with |K| ≤ max_exhaustive_block and at most
        max_block_ideals ideals directly instead of recursing; the recursion returns the same set there (it
        is complete whenever every irreducible piece is listed whole), so this only saves time.
    """

    max_exhaustive_block: int = 16
    max_block_ideals: int = 4096
    max_branch_combinations: int = 4096
    enumerate_small_blocks: bool = True


@dataclass
class CutCandidates:
    """Candidate device sets and whether they are provably every ideal containing the inputs."""

    masks: list[np.ndarray]
    complete: bool                     # every ideal: no partial block listing, no floating nodes
    dads: np.ndarray | None            # the DADS cut, when a partial listing needed it
    forms: list[tuple[int, tuple[int, ...]]] | None = None   # (last, extra): S = {0..last} ∪ extra; None with floating nodes


class _Context:
    """Per-call state of the recursion: settings, the lazily computed DADS cut, completeness."""

    def __init__(self, settings: CutSettings, dads: Callable[[], np.ndarray] | None) -> None:
        self.settings = settings
        self._dads_fn = dads
        self.dads_mask: np.ndarray | None = None
        self.complete = True

    def dads(self) -> frozenset[int]:
        if self._dads_fn is None:
            return frozenset()
        if self.dads_mask is None:
            self.dads_mask = np.asarray(self._dads_fn(), dtype=bool)
        return frozenset(int(v) for v in np.flatnonzero(self.dads_mask))


def ideals(order: Sequence[int], preds: Mapping[int, Iterable[int]]) -> list[frozenset[int]]:
    """Every downward-closed subset of `order` (a topological order); `preds` restricted to `order`.

    ∅ comes first; a node is added only when all its predecessors are in. Exponential: callers cap |order|.
    """
    out = bounded_ideals(order, preds, None)
    assert out is not None
    return out


def bounded_ideals(order: Sequence[int], preds: Mapping[int, Iterable[int]],
                   limit: int | None) -> list[frozenset[int]] | None:
    """`ideals`, or None as soon as there are more than `limit` of them.

    Extends partial ideals node by node as bitmasks over positions in `order` (excluding a node is always
    possible, so the partial count never exceeds the final count); iterative, no recursion limit.
    """
    pos = {v: i for i, v in enumerate(order)}
    partial = [0]
    for i, v in enumerate(order):
        need = 0
        for p in preds.get(v, ()):
            if p in pos:
                need |= 1 << pos[p]
        bit = 1 << i
        grown: list[int] = []
        for s in partial:
            grown.append(s)
            if s & need == need:
                grown.append(s | bit)
        if limit is not None and len(grown) > limit:
            return None
        partial = grown
    return [frozenset(order[i] for i in range(len(order)) if s >> i & 1) for s in partial]


def dominator_chain(g: nx.DiGraph, a: int, b: int) -> list[int]:
    """Nodes on every a → b path of g, in path order (a first, b last)."""
    idom = nx.immediate_dominators(g, a)
    chain = [b]
    while chain[-1] != a:
        chain.append(idom[chain[-1]])
    return chain[::-1]


def _blocks(g: nx.DiGraph, chain: list[int]) -> list[list[int]]:
    """K_j = nodes strictly between chain[j] and chain[j+1], each sorted (ints sort topologically)."""
    pos = {c: i for i, c in enumerate(chain)}
    block: dict[int, int] = {}
    for v in sorted(g.nodes):
        if v in pos:
            continue
        # predecessors of a K_j node lie in K_j ∪ {a_j}, so the max over predecessors is j
        block[v] = max(pos[p] if p in pos else block[p] for p in g.predecessors(v))
    out: list[list[int]] = [[] for _ in range(len(chain) - 1)]
    for v, j in block.items():
        out[j].append(v)
    return [sorted(k) for k in out]


def _dedupe(sets: Iterable[frozenset[int]]) -> list[frozenset[int]]:
    seen: set[frozenset[int]] = set()
    out = []
    for s in sets:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _subgraph(g: nx.DiGraph, interior: Iterable[int], a: int, b: int) -> nx.DiGraph:
    """interior ∪ {a, b} induced, without the direct edge a → b."""
    h = nx.DiGraph(g.subgraph(set(interior) | {a, b}))
    if h.has_edge(a, b):
        h.remove_edge(a, b)
    return h


def _interior_ideals(g: nx.DiGraph, a: int, b: int, ctx: _Context, chain: list[int] | None = None) -> list[frozenset[int]]:
    """Ideals of g − {a, b} (a counts as on the device); g has the single source a and the single sink b."""
    chain = chain or dominator_chain(g, a, b)
    blocks = _blocks(g, chain)
    out: list[frozenset[int]] = []
    prefix: set[int] = set()
    for j in range(len(chain) - 1):
        if j > 0:
            prefix.add(chain[j])
        base = frozenset(prefix)
        out.append(base)
        if blocks[j]:
            out.extend(base | i for i in _block_ideals(g, chain[j], chain[j + 1], blocks[j], ctx) if i)
        prefix.update(blocks[j])
    out.append(frozenset(prefix))
    return _dedupe(out)


def _irreducible_ideals(g: nx.DiGraph, block: list[int], ctx: _Context) -> list[frozenset[int]]:
    preds = {v: tuple(g.predecessors(v)) for v in block}
    if len(block) <= ctx.settings.max_exhaustive_block:
        return ideals(block, preds)
    few = bounded_ideals(block, preds, ctx.settings.max_block_ideals)
    if few is not None:                                   # a larger block with few ideals is listed whole too
        return few
    ctx.complete = False
    dads = ctx.dads()
    out = [frozenset(block[:i]) for i in range(len(block) + 1)]   # prefixes of a topological order
    out.append(frozenset(v for v in block if v in dads))
    return _dedupe(out)


def _block_ideals(g: nx.DiGraph, a: int, b: int, block: list[int], ctx: _Context) -> list[frozenset[int]]:
    """Ideals of the block between consecutive chain nodes a and b (∅ and the full block included)."""
    if ctx.settings.enumerate_small_blocks and len(block) <= ctx.settings.max_exhaustive_block:
        few = bounded_ideals(block, {v: tuple(g.predecessors(v)) for v in block}, ctx.settings.max_block_ideals)
        if few is not None:
            return few
    comps = sorted((sorted(c) for c in nx.weakly_connected_components(g.subgraph(block))), key=lambda c: c[0])
    if len(comps) == 1:
        h = _subgraph(g, block, a, b)
        chain = dominator_chain(h, a, b)
        if len(chain) == 2:                       # no internal cut vertex: irreducible
            return _irreducible_ideals(g, block, ctx)
        return _interior_ideals(h, a, b, ctx, chain)
    opts = [_interior_ideals(_subgraph(g, comp, a, b), a, b, ctx) for comp in comps]
    if math.prod(len(o) for o in opts) <= ctx.settings.max_branch_combinations:
        return _dedupe(frozenset().union(*pick) for pick in product(*opts))
    # Too many combinations: each branch varies alone with the others empty or full, plus the
    # topological prefixes of the whole block and the DADS cut restricted to it.
    ctx.complete = False
    out: list[frozenset[int]] = [frozenset(), frozenset(block)]
    full = [frozenset(c) for c in comps]
    for i, o in enumerate(opts):
        rest_full = frozenset().union(*(full[k] for k in range(len(comps)) if k != i))
        for s in o:
            out.append(s)
            out.append(s | rest_full)
    out.extend(frozenset(block[:i]) for i in range(len(block) + 1))
    dads = ctx.dads()
    out.append(frozenset(v for v in block if v in dads))
    return _dedupe(out)


def _levels(n: int, chain: list[int], blocks: list[list[int]]) -> np.ndarray:
    """2j for the chain node a_j, 2j+1 inside K_j: ancestors(a_j) ∪ {a_j} = {level ≤ 2j} (floating: above all)."""
    level = np.full(n, 2 * len(chain) + 2, dtype=np.int64)
    for i, c in enumerate(chain):
        if 0 <= c < n:
            level[c] = 2 * i
    for j, k in enumerate(blocks):
        level[k] = 2 * j + 1
    return level


def reachable_from_inputs(problem: SplitInferenceProblem, adj: GraphIndex) -> np.ndarray:
    """bool (n,): nodes with an input among their ancestors (or inputs themselves)."""
    reach = np.asarray(problem.is_input, dtype=bool).copy()
    for v in range(problem.num_nodes):                  # index order is topological
        if not reach[v] and any(reach[p] for p in adj.pred[v]):
            reach[v] = True
    return reach


def close_floating(problem: SplitInferenceProblem, adj: GraphIndex, mask: np.ndarray, floating: Sequence[int]) -> None:
    """In place: a node unreachable from the inputs joins the device iff one of its consumers is there."""
    for c in reversed(floating):
        mask[c] = any(mask[w] for w in adj.succ[c])


def decomposition_graph(problem: SplitInferenceProblem, adj: GraphIndex) -> tuple[nx.DiGraph, list[int]]:
    """The graph the decomposition runs on, and the floating nodes left out of it.

    Nodes reachable from an input, the virtual source -1 feeding every input, and the virtual sink n fed by
    every node without successors (model outputs and dead ends alike).
    """
    n = problem.num_nodes
    inputs = np.flatnonzero(np.asarray(problem.is_input, dtype=bool))
    if len(inputs) == 0:
        raise ValueError("the graph has no input node")
    reach = reachable_from_inputs(problem, adj)
    vs, vt = -1, n                                      # ints keep sorting topological
    g = nx.DiGraph()
    g.add_nodes_from([vs, vt])
    g.add_nodes_from(int(v) for v in np.flatnonzero(reach))
    g.add_edges_from((int(u), int(v)) for u, v in zip(adj.src, adj.dst) if reach[u])
    g.add_edges_from((vs, int(x)) for x in inputs)
    g.add_edges_from((v, vt) for v in list(g.nodes) if v not in (vs, vt) and g.out_degree(v) == 0)
    return g, [int(v) for v in np.flatnonzero(~reach)]


def candidate_cuts(problem: SplitInferenceProblem, adj: GraphIndex | None = None,
                   dads: Callable[[], np.ndarray] | None = None, settings: CutSettings = CutSettings()) -> CutCandidates:
    """COACH candidate device sets (bool masks), deduplicated, in generation order (chain position first).

    `dads` returns the DADS cut; it is called (once) only when a block has to be listed partially.
    """
    adj = adj or graph_index(problem)
    n = problem.num_nodes
    inputs = np.flatnonzero(np.asarray(problem.is_input, dtype=bool))
    g, floating = decomposition_graph(problem, adj)
    vs, vt = -1, n
    ctx = _Context(settings, dads)
    chain = dominator_chain(g, vs, vt)
    blocks = _blocks(g, chain)
    level = _levels(n, chain, blocks)
    # Each cut as (last, extra): S = {0..last} ∪ extra. Without floating nodes ancestors(a_j) ∪ {a_j} is
    # exactly the index prefix up to a_j (earlier blocks are ancestors of a_j, later ones descendants).
    input_set = frozenset(int(x) for x in inputs)
    raw: list[tuple[int, int, frozenset[int]]] = []      # (chain position j, last, extra)
    for j in range(len(chain) - 1):
        last = chain[j] if j > 0 else -1
        raw.append((j, last, frozenset()))
        if blocks[j]:
            raw.extend((j, last, extra) for extra in _block_ideals(g, chain[j], chain[j + 1], blocks[j], ctx) if extra)
    raw.append((len(chain) - 1, n - 1, frozenset()))
    out: list[np.ndarray] = []
    forms: list[tuple[int, tuple[int, ...]]] = []
    seen: set[bytes] = set()
    for j, last, extra in raw:
        j_extra = tuple(sorted(extra | input_set)) if last < 0 else tuple(sorted(extra))
        if floating:
            m = level <= 2 * j
            m[list(j_extra)] = True
            close_floating(problem, adj, m, floating)
        else:
            m = np.zeros(n, dtype=bool)
            m[:last + 1] = True
            m[list(j_extra)] = True
        key = np.packbits(m).tobytes()
        if key not in seen:
            seen.add(key)
            out.append(m)
            forms.append((last, j_extra))
    # with floating nodes only the ideals where each one follows its consumers are listed
    return CutCandidates(out, ctx.complete and not floating, ctx.dads_mask, None if floating else forms)


def chain_cuts(problem: SplitInferenceProblem, adj: GraphIndex | None = None) -> list[np.ndarray]:
    """Single-tensor cuts ancestors(a) ∪ {a} for every node a on the dominator chain (Neurosurgeon's space).

    The first entry is all-cloud (inputs only) when one input dominates the graph, the last is all-device.
    """
    adj = adj or graph_index(problem)
    n = problem.num_nodes
    inputs = np.flatnonzero(np.asarray(problem.is_input, dtype=bool))
    g, floating = decomposition_graph(problem, adj)
    vs, vt = -1, n
    chain = dominator_chain(g, vs, vt)
    level = _levels(n, chain, _blocks(g, chain))
    out = []
    seen: set[bytes] = set()
    for i in range(1, len(chain)):
        m = level <= 2 * i
        m[inputs] = True
        if floating:
            close_floating(problem, adj, m, floating)
        key = np.packbits(m).tobytes()
        if key not in seen:                 # the model output and the virtual sink give the same S = V
            seen.add(key)
            out.append(m)
    return out


def dads_cut(problem: SplitInferenceProblem, adj: GraphIndex | None = None, bits: Mapping[int, int] | None = None) -> np.ndarray:
    """Device set of the min s–t cut for Σ_S t_e + Σ_{V∖S} t_c + Σ_{V_p} transfer (DADS; docs/split-inference.md §3).

    s → v: t_c(v); v → t: t_e(v); v → v': bytes(v, b_v)/BW (+ t_q + t_dq when quantised), v' → w: ∞ for each
    consumer w; w → v: ∞ for each edge (downward closure); s → input: ∞. Bits default to native.
    The constants RTT and the result's return leg are left out (see `baselines.dads`).
    """
    adj = adj or graph_index(problem)
    n = problem.num_nodes
    bits = bits or {}
    bw = problem.bandwidth_bytes_per_s
    if bw <= 0:
        return np.ones(n, dtype=bool)
    s_node, t_node = -1, -2
    g = nx.DiGraph()
    for v in range(n):
        g.add_edge(s_node, v, capacity=float(problem.cloud_time_s[v]))
        g.add_edge(v, t_node, capacity=float(problem.edge_time_s[v]))
    for v in np.flatnonzero(np.asarray(problem.is_input, dtype=bool)):
        g[s_node][int(v)].pop("capacity", None)     # no capacity attribute: infinite in networkx
    for v in range(n):
        if not adj.succ[v]:
            continue
        b = bits_of(problem, v, bits)
        cost = tensor_bytes(problem, v, b) / bw + quantise_s(problem, v, b) + dequantise_s(problem, v, b)
        g.add_edge(v, n + v, capacity=cost)
        for w in adj.succ[v]:
            g.add_edge(n + v, w)
            g.add_edge(w, v)
    _, (source_side, _) = nx.minimum_cut(g, s_node, t_node)
    mask = np.zeros(n, dtype=bool)
    mask[[v for v in source_side if 0 <= v < n]] = True
    return mask
