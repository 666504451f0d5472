"""Graph test beds: the cSBM's two signals are what they claim, splits record every cut edge, PyG runs on them."""
from __future__ import annotations

import numpy as np
import pytest

from core.errors import PlannerError
from testbeds import graphs
from testbeds.specs import parse_graph


def _cut_oracle(g: graphs.Graph) -> set[int]:
    return {i for i in range(g.edges.shape[1]) if g.client[g.edges[0, i]] != g.client[g.edges[1, i]]}


@pytest.mark.parametrize("homophily", [0.25, 0.9])
def test_csbm_homophily_and_degree(homophily: float) -> None:
    g = graphs.csbm(nodes=800, classes=4, degree=8.0, homophily=homophily, snr=1.0, seed=1)
    assert g.edges.shape[1] == len({tuple(e) for e in g.edges.T}) and np.all(g.edges[0] < g.edges[1])
    assert abs(g.edge_homophily() - homophily) < 0.04
    assert abs(2 * g.edges.shape[1] / 800 - 8.0) < 0.8
    again = graphs.csbm(nodes=800, classes=4, degree=8.0, homophily=homophily, snr=1.0, seed=1)
    assert np.array_equal(g.edges, again.edges) and np.array_equal(g.x, again.x)


def test_feature_snr_is_the_feature_signal() -> None:
    """Nearest-class-mean accuracy on features alone rises with snr and is at chance at snr = 0."""
    def nearest_mean_acc(snr: float) -> float:
        g = graphs.csbm(nodes=1200, classes=4, degree=5.0, homophily=0.25, snr=snr, features=16, seed=2)
        tr, te = np.arange(600), np.arange(600, 1200)
        means = np.stack([g.x[tr][g.y[tr] == c].mean(0) for c in range(4)])
        pred = np.argmin(((g.x[te][:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        return float(np.mean(pred == g.y[te]))
    low, mid, high = nearest_mean_acc(0.0), nearest_mean_acc(1.5), nearest_mean_acc(4.0)
    assert low < 0.33 and low < mid < high and high > 0.85


@pytest.mark.parametrize("how", graphs.SPLITS)
def test_splits_cover_every_node_and_record_every_cut_edge(how: str) -> None:
    g = graphs.split(graphs.csbm(nodes=400, classes=4, degree=6.0, homophily=0.8, seed=3), 5, how, seed=3)
    assert set(np.unique(g.client)) == set(range(5))
    assert set(g.cross_edges.tolist()) == _cut_oracle(g)
    kept = sum(g.client_subgraph(c)[1].shape[1] for c in range(5))
    assert kept + len(g.cross_edges) == g.edges.shape[1]


def test_louvain_cuts_fewer_edges_and_skews_labels_more_than_random() -> None:
    base = dict(nodes=600, classes=4, degree=6.0, homophily=0.9, seed=4)
    lv = graphs.split(graphs.csbm(**base), 4, "louvain", seed=4)
    rnd = graphs.split(graphs.csbm(**base), 4, "random", seed=4)
    assert len(lv.cross_edges) < 0.5 * len(rnd.cross_edges)

    def skew(g: graphs.Graph) -> float:   # mean over clients of the largest label share
        return float(np.mean([np.bincount(g.y[g.client == c], minlength=4).max() / np.sum(g.client == c) for c in range(4)]))
    assert skew(lv) > skew(rnd) + 0.2
    sk = graphs.split(graphs.csbm(**base), 4, "skewed", seed=4, alpha=0.1, size_alpha=0.5)
    sizes = np.bincount(sk.client, minlength=4)
    assert sizes.max() > 2 * sizes.min() and skew(sk) > skew(rnd)


def test_csbm_clients_groups_have_their_own_signals() -> None:
    spec = parse_graph("csbm-clients:groups=3,clients=30,nodes=1500")
    g = graphs.build_graph(spec.name, spec.args)
    assert set(np.unique(g.client)) == set(range(30)) and len(g.meta["groups"]) == 3
    homs = []
    for grp in g.meta["groups"]:
        inside = np.isin(g.client, grp["clients"])
        e = inside[g.edges[0]]
        assert np.all(inside[g.edges[1]][e])                          # no edge leaves a group
        homs.append(float(np.mean(g.y[g.edges[0][e]] == g.y[g.edges[1][e]])))
    assert homs == sorted(homs) and homs[0] < 0.45 and homs[-1] > 0.85
    assert set(g.cross_edges.tolist()) == _cut_oracle(g)
    assert g.meta["train_share_by_client"] == [0.4] * 30


def test_csbm_clients_labelled_share_per_group_sets_the_train_nodes() -> None:
    """`labelled=A..B` spreads the train share over the groups; the lowering gives every client that share of
    train nodes (and 20 % validation); the graph itself does not change."""
    from planner.families.fed_graph.lowering import load_clients

    spec = "csbm-clients:groups=3,clients=6,nodes=600,degree=3..6,features=4"
    a, b = load_clients(spec, 0), load_clients(spec + ",labelled=0.1..0.5", 0)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.edges, b.edges)
    for c in range(6):
        nodes = np.flatnonzero(b.client == c)
        assert (b.split[nodes] == 0).sum() == int((0.1, 0.3, 0.5)[c % 3] * len(nodes))
        assert (b.split[nodes] == 1).sum() == int(0.2 * len(nodes))
    with pytest.raises(PlannerError, match="labelled=0.9 is not a share"):
        load_clients(spec + ",labelled=0.9", 0)


def test_small_graphs_and_pyg_layers_run_on_them() -> None:
    import torch
    from torch_geometric.nn import GCNConv, SAGEConv

    g = graphs.build_graph("karate", parse_graph("karate:clients=2").args)
    assert g.num_nodes == 34 and g.edges.shape[1] == 78 and set(np.unique(g.y)) == {0, 1}
    x, ei = torch.from_numpy(g.x), g.edge_index()
    torch.manual_seed(0)
    out = SAGEConv(8, 4)(GCNConv(8, 8)(x, ei).relu(), ei)
    assert out.shape == (34, 4) and torch.isfinite(out).all()


def test_bad_graph_arguments() -> None:
    with pytest.raises(PlannerError, match="edge probabilities above 1"):
        graphs.csbm(nodes=20, classes=2, degree=30.0, homophily=0.9)
    with pytest.raises(PlannerError, match="cannot split 34 nodes into 40 clients"):
        graphs.build_graph("karate", parse_graph("karate:clients=40").args)
    with pytest.raises(PlannerError, match="unknown split 'metis'"):
        graphs.build_graph("csbm", parse_graph("csbm:nodes=100,split=metis").args)
    with pytest.raises(PlannerError, match="homophily_range=high is not a range"):
        graphs.build_graph("csbm-clients", parse_graph("csbm-clients:homophily_range=high").args)


def test_the_louvain_split_is_cached_and_a_bad_entry_is_recomputed(tmp_path, monkeypatch) -> None:
    """The second split of the same graph reads the cache and gives the same owners; a corrupt entry (owners
    out of range) is ignored and recomputed."""
    import numpy as np

    from core.cache import cache_dir

    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path))
    base = dict(nodes=300, classes=3, degree=8, seed=2)
    first = graphs.split(graphs.csbm(**base), 3, "louvain", seed=1).client.copy()
    entries = list((cache_dir() / "graph-splits").glob("*.npz"))
    assert len(entries) == 1
    assert np.array_equal(graphs.split(graphs.csbm(**base), 3, "louvain", seed=1).client, first)
    np.savez(entries[0], owner=np.full(300, 7, dtype=np.int64))
    assert np.array_equal(graphs.split(graphs.csbm(**base), 3, "louvain", seed=1).client, first)
    assert len(list((cache_dir() / "graph-splits").glob("*.npz"))) == 1
    other = graphs.split(graphs.csbm(**base), 3, "louvain", seed=2).client
    assert len(list((cache_dir() / "graph-splits").glob("*.npz"))) == 2 and other.shape == first.shape
