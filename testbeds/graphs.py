"""Graphs for the federated/decentralised graph families: a contextual SBM, client splits, small graphs.

Contextual stochastic block model (Deshpande et al., 2018): `classes` planted blocks; an edge joins two nodes
of the same class with probability p_in and of different classes with p_out, chosen so the expected degree
is `degree` and the edge homophily (fraction of intra-class edges) is `homophily`: the structure signal.
Node features are a class mean plus Gaussian noise, `x_i = (snr / sqrt 2) * u_{y_i} + N(0, I)` with a random
unit direction u_c per class: two class means lie about `snr` apart (the directions are nearly orthogonal)
in units of the noise's standard deviation, so `snr` is the feature signal. Both are tunable separately; `homophily = 1/classes` is a structure carrying no label information, `snr = 0` likewise features.

Splits into clients (each records the cross-client edges it cuts):
  louvain   networkx's Louvain communities (seeded), merged/assigned greedily into `clients` parts of
            similar size: few cut edges, label-skewed parts (FederatedScope-GNN's Louvain splitter)
  skewed    a seeded split whose client sizes follow Dirichlet(size_alpha) and whose label mixture per client
            follows Dirichlet(alpha): non-IID by size and label, many cut edges
  random    uniform random assignment (IID reference)
`csbm-clients`: `groups` groups of clients, each with its own (homophily, snr, degree) spread between a
feature-dominant regime (near-random edges, few of them, informative features) and a structure-dominant one
(homophilous, denser, noisy features), the rest of the generator as above. `split=client` (default): every
client holds its own cSBM graph drawn with its group's settings, so its local structure (degree, clustering)
is its group's; `split=random`: one graph per group split at random over the group's clients (a client then
keeps only ~degree/clients-per-group of each node's edges, and local structure barely differs by group).
`karate`, `les_miserables`, `florentine`, `davis`: networkx's bundled small graphs (labels: communities).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from core.errors import PlannerError

# name -> {key: (type, default)}, read by testbeds.specs.parse_graph
_CSBM_ARGS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "nodes": (int, 2000), "classes": (int, 4), "degree": (float, 10.0), "homophily": (float, 0.8),
    "snr": (float, 1.0), "features": (int, 32), "clients": (int, 10), "split": (str, "louvain"),
    "alpha": (float, 0.5), "size_alpha": (float, 2.0), "seed": (int, 0)}
GRAPHS: dict[str, dict[str, tuple[Callable[[str], Any], Any]]] = {
    "csbm": _CSBM_ARGS,
    "csbm-clients": {**_CSBM_ARGS, "nodes": (int, 3000), "groups": (int, 3), "clients": (int, 30),
                     "homophily_range": (str, "0.3..0.9"), "snr_range": (str, "2.0..0.3"), "degree": (str, "3..12"),
                     "split": (str, "client"), "labelled": (str, "0.4")},
    "karate": {"clients": (int, 2), "split": (str, "louvain"), "features": (int, 8), "seed": (int, 0)},
    "les_miserables": {"clients": (int, 3), "split": (str, "louvain"), "features": (int, 8), "seed": (int, 0)},
    "florentine": {"clients": (int, 2), "split": (str, "louvain"), "features": (int, 8), "seed": (int, 0)},
    "davis": {"clients": (int, 2), "split": (str, "louvain"), "features": (int, 8), "seed": (int, 0)},
}
SPLITS = ("louvain", "skewed", "random")


@dataclass
class Graph:
    """An undirected graph with node features and labels, and (optionally) its split into clients.

    edges: (2, E) int64, each undirected edge once with edges[0] < edges[1]; x: (N, F) float32; y: (N,) int64;
    client: (N,) int64 owner of each node (-1 before a split); cross_edges: indices into `edges` of the edges
    whose ends belong to different clients."""

    edges: np.ndarray
    x: np.ndarray
    y: np.ndarray
    client: np.ndarray
    cross_edges: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.y.shape[0])

    def edge_homophily(self) -> float:
        """Fraction of edges joining nodes of the same label."""
        if self.edges.shape[1] == 0:
            return math.nan
        return float(np.mean(self.y[self.edges[0]] == self.y[self.edges[1]]))

    def edge_index(self) -> Any:
        """Both directions as a torch (2, 2E) tensor (PyG's edge_index convention)."""
        import torch

        e = torch.from_numpy(self.edges)
        return torch.cat([e, e.flip(0)], dim=1)

    def client_nodes(self, c: int) -> np.ndarray:
        """Sorted node ids owned by client `c`."""
        return np.flatnonzero(self.client == c)

    def client_subgraph(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(global node ids, local (2, E_c) edges) of client `c`'s induced subgraph (cross edges dropped)."""
        nodes = self.client_nodes(c)
        local = -np.ones(self.num_nodes, dtype=np.int64)
        local[nodes] = np.arange(len(nodes))
        keep = (self.client[self.edges[0]] == c) & (self.client[self.edges[1]] == c)
        return nodes, local[self.edges[:, keep]]


# ---------------------------------------------------------------- generators
def block_probabilities(nodes: int, classes: int, degree: float, homophily: float) -> tuple[float, float]:
    """(p_in, p_out) giving expected degree `degree` and expected edge homophily `homophily` for equal blocks."""
    if not 0.0 <= homophily <= 1.0:
        raise PlannerError(f"homophily {homophily} is not a fraction", "use a value in [0, 1]")
    n_in = nodes / classes - 1                      # same-class neighbours a node can have
    n_out = nodes - nodes / classes
    p_in, p_out = degree * homophily / n_in, degree * (1 - homophily) / n_out
    if p_in > 1 or p_out > 1:
        raise PlannerError(f"degree {degree} with homophily {homophily} needs edge probabilities above 1",
                           "lower the degree or raise the number of nodes")
    return p_in, p_out


def csbm(nodes: int = 2000, classes: int = 4, degree: float = 10.0, homophily: float = 0.8, snr: float = 1.0,
         features: int = 32, seed: int = 0) -> Graph:
    """A contextual SBM graph (unsplit: every node's client is -1)."""
    if nodes < 2 * classes or classes < 2 or features < 1 or degree <= 0 or snr < 0:
        raise PlannerError(f"csbm needs nodes >= 2*classes, classes >= 2, features >= 1, degree > 0, snr >= 0 "
                           f"(got nodes={nodes}, classes={classes}, features={features}, degree={degree}, snr={snr})",
                           "fix the --graph arguments")
    rng = np.random.default_rng(seed)
    y = np.sort(np.arange(nodes) % classes)
    rng.shuffle(y)
    p_in, p_out = block_probabilities(nodes, classes, degree, homophily)
    edges = _sbm_edges(y, p_in, p_out, rng)
    means = rng.normal(size=(classes, features))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    x = (snr / math.sqrt(2.0)) * means[y] + rng.normal(size=(nodes, features))
    n = len(y)
    return Graph(edges, x.astype(np.float32), y.astype(np.int64), -np.ones(n, dtype=np.int64), np.zeros(0, dtype=np.int64),
                 {"generator": "csbm", "nodes": nodes, "classes": classes, "degree": degree, "homophily": homophily,
                  "snr": snr, "features": features, "seed": seed})


def _sbm_edges(y: np.ndarray, p_in: float, p_out: float, rng: np.random.Generator) -> np.ndarray:
    """Sample an undirected SBM edge set (i < j), block pair by block pair with geometric skipping's
    equivalent: a binomial count of edges then uniform distinct pairs."""
    classes = int(y.max()) + 1
    members = [np.flatnonzero(y == c) for c in range(classes)]
    chunks = []
    for a in range(classes):
        for b in range(a, classes):
            na, nb = len(members[a]), len(members[b])
            pairs = na * (na - 1) // 2 if a == b else na * nb
            p = p_in if a == b else p_out
            k = int(rng.binomial(pairs, p)) if pairs else 0
            if not k:
                continue
            idx = rng.choice(pairs, size=k, replace=False)
            if a == b:   # unrank pair index -> (i, j), i < j
                j = np.floor((1 + np.sqrt(1 + 8 * idx.astype(np.float64))) / 2).astype(np.int64)
                i = idx - j * (j - 1) // 2
                u, v = members[a][i], members[a][j]
            else:
                u, v = members[a][idx // nb], members[b][idx % nb]
            chunks.append(np.stack([np.minimum(u, v), np.maximum(u, v)]))
    if not chunks:
        return np.zeros((2, 0), dtype=np.int64)
    e = np.concatenate(chunks, axis=1).astype(np.int64)
    order = np.lexsort((e[1], e[0]))
    return e[:, order]


def small_graph(name: str, features: int = 8, seed: int = 0) -> Graph:
    """A networkx bundled graph with labels from its known groups (karate: 'club') or Louvain communities,
    and features = noisy one-hot of the label."""
    import networkx as nx

    makers = {"karate": nx.karate_club_graph, "les_miserables": nx.les_miserables_graph,
              "florentine": nx.florentine_families_graph, "davis": nx.davis_southern_women_graph}
    g = nx.convert_node_labels_to_integers(makers[name](), ordering="sorted")
    if name == "karate":
        y = np.array([0 if g.nodes[i]["club"] == "Mr. Hi" else 1 for i in range(g.number_of_nodes())])
    else:
        comms = nx.community.louvain_communities(g, seed=seed)
        y = np.zeros(g.number_of_nodes(), dtype=np.int64)
        for k, c in enumerate(sorted(comms, key=min)):
            y[list(c)] = k
    edges = np.array(sorted((min(u, v), max(u, v)) for u, v in g.edges() if u != v), dtype=np.int64).T
    rng = np.random.default_rng(seed)
    x = np.eye(max(features, int(y.max()) + 1))[y][:, :features] + 0.5 * rng.normal(size=(len(y), features))
    n = len(y)
    return Graph(edges, x.astype(np.float32), y.astype(np.int64), -np.ones(n, dtype=np.int64), np.zeros(0, dtype=np.int64),
                 {"generator": name, "nodes": n, "classes": int(y.max()) + 1, "seed": seed})


# ---------------------------------------------------------------- splits
def split(graph: Graph, clients: int, how: str = "louvain", seed: int = 0, alpha: float = 0.5,
          size_alpha: float = 2.0) -> Graph:
    """Assign every node to one of `clients` clients and record the cut (cross-client) edges; returns `graph`."""
    n = graph.num_nodes
    if not 1 <= clients <= n:
        raise PlannerError(f"cannot split {n} nodes into {clients} clients", f"use 1..{n} clients")
    if how not in SPLITS:
        raise PlannerError(f"unknown split '{how}'", f"use one of {', '.join(SPLITS)}")
    rng = np.random.default_rng(seed)
    if how == "random":
        owner = rng.permutation(np.arange(n) % clients)
    elif how == "skewed":
        owner = _skewed(graph.y, clients, alpha, size_alpha, rng)
    else:
        owner = _louvain(graph, clients, seed)
    graph.client = owner.astype(np.int64)
    graph.cross_edges = np.flatnonzero(owner[graph.edges[0]] != owner[graph.edges[1]]).astype(np.int64)
    graph.meta.update({"split": how, "clients": clients, "split_seed": seed, "cross_edges": int(len(graph.cross_edges))})
    return graph


def _louvain(graph: Graph, clients: int, seed: int) -> np.ndarray:
    """Louvain communities, then greedy: largest community to the currently smallest client (FS-GNN style).
    The owner array is cached by the graph's edges, the client count, the seed and networkx's version (Louvain
    takes tens of seconds on 8 000 nodes, and `plan` and `run` split the same graph)."""
    import hashlib

    import networkx as nx

    from core.cache import cache_key, load_npz, save_npz

    edges = np.ascontiguousarray(graph.edges, dtype=np.int64)
    key = cache_key("louvain-split", 1, hashlib.sha256(edges.tobytes()).hexdigest(), graph.num_nodes, clients,
                    seed, nx.__version__)
    cached = load_npz("graph-splits", key)
    if cached is not None and "owner" in cached and cached["owner"].shape == (graph.num_nodes,) \
            and cached["owner"].min() >= 0 and cached["owner"].max() < clients:
        return cached["owner"].astype(np.int64)
    g = nx.Graph()
    g.add_nodes_from(range(graph.num_nodes))
    g.add_edges_from(graph.edges.T.tolist())
    comms = sorted((sorted(c) for c in nx.community.louvain_communities(g, seed=seed)), key=lambda c: (-len(c), c[0]))
    target = math.ceil(graph.num_nodes / clients)
    owner = np.zeros(graph.num_nodes, dtype=np.int64)
    sizes = np.zeros(clients, dtype=np.int64)
    for c in comms:
        # a community larger than a client's share is cut into share-sized pieces along a BFS order
        # (connected regions, fewer cut edges than an arbitrary cut)
        if len(c) > target:
            c = _bfs_order(g.subgraph(c))
        for start in range(0, len(c), target):
            piece = c[start: start + target]
            k = int(np.argmin(sizes))
            owner[piece] = k
            sizes[k] += len(piece)
    save_npz("graph-splits", key, {"owner": owner})
    return owner


def _bfs_order(g: Any) -> list[int]:
    """Nodes of `g` in breadth-first order from the smallest node of each component (neighbours sorted)."""
    seen: set[int] = set()
    order: list[int] = []
    for root in sorted(g.nodes):
        if root in seen:
            continue
        seen.add(root)
        queue = [root]
        while queue:
            u = queue.pop(0)
            order.append(u)
            for v in sorted(g.neighbors(u)):
                if v not in seen:
                    seen.add(v)
                    queue.append(v)
    return order


def _skewed(y: np.ndarray, clients: int, alpha: float, size_alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Client sizes ~ Dirichlet(size_alpha), label mixture ~ Dirichlet(alpha) per client; every client >= 1 node."""
    if alpha <= 0 or size_alpha <= 0:
        raise PlannerError("Dirichlet concentrations must be positive", "pass e.g. alpha=0.5,size_alpha=2")
    n, classes = len(y), int(y.max()) + 1
    size_share = rng.dirichlet([size_alpha] * clients)
    mix = rng.dirichlet([alpha] * clients, size=classes)          # per class: how its nodes spread over clients
    weights = mix * size_share[None, :]
    weights /= weights.sum(axis=1, keepdims=True)
    owner = np.array([rng.choice(clients, p=weights[y[i]]) for i in range(n)], dtype=np.int64)
    for c in range(clients):                                       # no empty client: take a node from the largest
        if not np.any(owner == c):
            big = int(np.argmax(np.bincount(owner, minlength=clients)))
            owner[rng.choice(np.flatnonzero(owner == big))] = c
    return owner


def _range(text: str, key: str) -> tuple[float, float]:
    lo, sep, hi = text.partition("..")
    try:
        return float(lo), float(hi if sep else lo)
    except ValueError:
        raise PlannerError(f"{key}={text} is not a range", f"write e.g. {key}=0.35..0.9") from None


def csbm_clients(nodes: int = 3000, classes: int = 4, degree: str | float = "3..12", features: int = 32,
                 groups: int = 3, clients: int = 30, homophily_range: str = "0.3..0.9", snr_range: str = "2.0..0.3",
                 split: str = "client", seed: int = 0, labelled: str | float = "0.4", **_: Any) -> Graph:
    """`groups` client groups, each with its own (homophily, snr, degree): group g takes the g-th of `groups`
    evenly spaced points along the three ranges (default: from feature-dominant, near-random sparse edges and
    high SNR, to structure-dominant, homophilous denser edges and low SNR). Clients are assigned round-robin to
    groups. `split=client`: each client's nodes are their own cSBM graph (no edges between clients);
    `split=random`: one cSBM per group, its nodes split at random over the group's clients (cut edges are
    intra-group). One class -> feature-mean map for all groups: a label means the same everywhere.
    `labelled`: the share of every client's nodes whose labels it trains on, one value, a range spread over the
    groups like the others, or one share per group (`0.4/0.05/0.4`) (recorded per client in `meta["train_share_by_client"]`; the federated families split
    each client's nodes into that share of train nodes, 20 % validation and the rest test): few labelled nodes
    per client make the shared feature -> label map hard to learn from one group's clients alone."""
    if "/" in str(labelled):    # one share per group, e.g. 0.4/0.05/0.4
        try:
            per_group = [float(v) for v in str(labelled).split("/")]
        except ValueError:
            raise PlannerError(f"labelled={labelled} is not a list of shares", "write e.g. labelled=0.4/0.05/0.4") from None
        if len(per_group) != groups:
            raise PlannerError(f"labelled={labelled} gives {len(per_group)} shares for {groups} groups",
                               f"give one share per group ({groups}), separated by /")
        l0, l1 = min(per_group), max(per_group)
    else:
        l0, l1 = _range(str(labelled), "labelled")
        per_group = [l0 + (g / (groups - 1) if groups > 1 else 0.0) * (l1 - l0) for g in range(groups)]
    if not (0.0 < l0 <= 0.6 and 0.0 < l1 <= 0.6):
        raise PlannerError(f"csbm-clients: labelled={labelled} is not a share of nodes in (0, 0.6]",
                           "use e.g. labelled=0.4 or labelled=0.05..0.4 (20 % of nodes are validation, the rest test)")
    if groups < 1 or clients < groups:
        raise PlannerError(f"{clients} clients cannot fill {groups} groups", "use at least one client per group")
    if split not in ("client", "random"):
        raise PlannerError(f"csbm-clients: unknown split '{split}'", "use split=client or split=random")
    h0, h1 = _range(homophily_range, "homophily_range")
    s0, s1 = _range(snr_range, "snr_range")
    d0, d1 = _range(str(degree), "degree")
    per_group_nodes = nodes // groups
    offset = 0
    rng = np.random.default_rng(seed)
    shared_means = rng.normal(size=(classes, max(features, 1)))
    shared_means /= np.linalg.norm(shared_means, axis=1, keepdims=True)
    xs, ys, es, owners, settings = [], [], [], [], []
    for g in range(groups):
        t = g / (groups - 1) if groups > 1 else 0.0
        h, s, d = h0 + t * (h1 - h0), s0 + t * (s1 - s0), d0 + t * (d1 - d0)
        lab = per_group[g]
        mine = [c for c in range(clients) if c % groups == g]
        if split == "client":    # one graph per client: sizes as even as possible, seeded per client
            sizes = [per_group_nodes // len(mine) + (i < per_group_nodes % len(mine)) for i in range(len(mine))]
            try:
                subs = [csbm(sizes[i], classes, d, h, s, features, seed=seed * 1000 + 37 * g + 1 + i)
                        for i in range(len(mine))]
            except PlannerError as e:
                if "edge probabilities above 1" not in str(e):
                    raise
                raise PlannerError(f"csbm-clients: group {g}'s client graphs of {min(sizes)} nodes per client cannot "
                                   f"reach degree {d:g} with homophily {h:.2f}",
                                   "raise nodes= or lower degree= (e.g. degree=4), or use split=random") from None
            own = [np.full(sizes[i], c, dtype=np.int64) for i, c in enumerate(mine)]
        else:
            subs = [csbm(per_group_nodes, classes, d, h, s, features, seed=seed * 1000 + g)]
            local = np.random.default_rng(seed * 1000 + g + 900).permutation(np.arange(per_group_nodes) % len(mine))
            own = [np.array(mine, dtype=np.int64)[local]]
        noise = np.random.default_rng(seed * 1000 + g + 500)
        for sub, o in zip(subs, own):
            x = (s / math.sqrt(2.0)) * shared_means[sub.y, :features] + noise.normal(size=(len(sub.y), features))
            xs.append(x.astype(np.float32))
            ys.append(sub.y)
            es.append(sub.edges + offset)
            owners.append(o)
            offset += len(sub.y)
        settings.append({"group": g, "homophily": round(h, 4), "snr": round(s, 4), "degree": round(d, 4),
                         "labelled": round(lab, 4), "clients": mine})
    edges = np.concatenate(es, axis=1)
    owner = np.concatenate(owners)
    graph = Graph(edges, np.concatenate(xs), np.concatenate(ys), owner,
                  np.flatnonzero(owner[edges[0]] != owner[edges[1]]).astype(np.int64),
                  {"generator": "csbm-clients", "nodes": offset, "classes": classes, "degree": str(degree),
                   "features": features, "groups": settings, "clients": clients, "seed": seed,
                   "split": "per-client" if split == "client" else "group-random"})
    graph.meta["client_group"] = [c % groups for c in range(clients)]
    graph.meta["train_share_by_client"] = [settings[c % groups]["labelled"] for c in range(clients)]
    return graph


def build_graph(name: str, args: Mapping[str, Any]) -> Graph:
    """The graph a parsed `--graph NAME:ARGS` names (testbeds.specs.parse_graph), split into its clients."""
    a = dict(args)
    if name == "csbm":
        g = csbm(a["nodes"], a["classes"], a["degree"], a["homophily"], a["snr"], a["features"], a["seed"])
        return split(g, a["clients"], a["split"], a["seed"], a["alpha"], a["size_alpha"])
    if name == "csbm-clients":
        return csbm_clients(**{k: v for k, v in a.items() if k not in ("homophily", "snr", "alpha", "size_alpha")})
    g = small_graph(name, a["features"], a["seed"])
    return split(g, a["clients"], a["split"], a["seed"])
