"""The planner's surrogate pilot: every configuration run for the plan's rounds on a linear stand-in of the GCN.

Each client's model is softmax regression on its propagated features z = [X, AX, A^2X] (A: mean over local
neighbours), i.e. a linear two-hop graph convolution (SGC/SIGN-style) trained by full-batch gradient descent.
The federation is FedGCF's exactly: per-cluster FedAvg (structural models), FedAvg over the common set U
(common model), beta-fusion per cluster, UCB1 on the validation gain. A SURROGATE (pure numpy, labelled so in
the plan): it ranks the configurations and sets the bandit's prior; accuracies and rounds it predicts are not
measurements (`planner run` and benchmarks/fed_graph.py measure the GCN on Flower).

    run = simulate(problem, config)      # run.val[r], run.test[r]: weighted accuracy after r rounds
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.fed_graph.bandit import Ucb1
from solvers.fed_graph.clustering import agglomerative, cosine_similarity
from solvers.fed_graph.problem import ClientData, FedGraphProblem, FusionConfig


@dataclass(frozen=True)
class PilotRun:
    """val / test (R+1,): accuracy of the models clients hold after r rounds (node-weighted over clients);
    betas (R, K): beta each cluster used per round; arm_val (R, K, A): validation accuracy of every arm, per
    cluster and round (what the per-round oracle sees); local_val (R, K): the cluster's trained models'
    validation accuracy (the reward's reference); regret (R,): oracle arm's minus the chosen arm's
    validation accuracy (node-weighted over all clients); clusters (n,) as finally used."""

    val: np.ndarray
    test: np.ndarray
    betas: np.ndarray
    arm_val: np.ndarray
    regret: np.ndarray
    clusters: np.ndarray
    local_val: np.ndarray      # (R, K) validation accuracy of the cluster's models right after local training


def _logits(theta: np.ndarray, z: np.ndarray, classes: int) -> np.ndarray:
    d = z.shape[1]
    w, b = theta[: d * classes].reshape(d, classes), theta[d * classes:]
    return z @ w + b


def _correct(theta: np.ndarray, c: ClientData, mask: np.ndarray, classes: int) -> float:
    if not mask.any():
        return 0.0
    return float((_logits(theta, c.z[mask], classes).argmax(1) == c.y[mask]).sum())


def local_train(theta: np.ndarray, c: ClientData, classes: int, steps: int, lr: float) -> np.ndarray:
    """`steps` full-batch gradient steps of mean cross-entropy on the client's train nodes."""
    z, y = c.z[c.train], c.y[c.train]
    onehot = np.eye(classes)[y]
    th = theta.copy()
    for _ in range(steps):
        lg = _logits(th, z, classes)
        lg -= lg.max(axis=1, keepdims=True)
        p = np.exp(lg)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / max(len(y), 1)
        grad = np.concatenate([(z.T @ g).ravel(), g.sum(axis=0)])
        th -= lr * grad
    return th


def _avg(models: np.ndarray, weights: np.ndarray, members: np.ndarray) -> np.ndarray:
    w = weights[members].astype(np.float64)
    return (models[members] * w[:, None]).sum(axis=0) / w.sum()


def initial_model(problem: FedGraphProblem) -> np.ndarray:
    """The seeded common start of every configuration (small Gaussian weights, zero bias)."""
    d = problem.pilot[0].z.shape[1]
    rng = np.random.default_rng(problem.seed)
    return np.concatenate([rng.normal(scale=0.01, size=d * problem.classes), np.zeros(problem.classes)])


def simulate(problem: FedGraphProblem, cfg: FusionConfig) -> PilotRun:
    """Run `cfg` for `problem.rounds` rounds on the pilot data (deterministic)."""
    data, C, n = problem.pilot, problem.classes, problem.num_clients
    weights = np.asarray(problem.train_nodes, dtype=np.float64)
    val_n = np.array([c.val.sum() for c in data], dtype=np.float64)
    test_n = np.array([c.test.sum() for c in data], dtype=np.float64)
    theta0 = initial_model(problem)
    uploads = np.tile(theta0, (n, 1))
    clusters = np.asarray(cfg.clusters, dtype=np.int64).copy()
    arms = np.asarray(cfg.arms if cfg.arms else (cfg.beta,), dtype=np.float64)
    R = problem.rounds
    updates = np.zeros_like(uploads)
    if cfg.mode == "gcfl":
        clusters = np.zeros(n, dtype=np.int64)
    K_max = int(max(clusters.max() + 1, cfg.gcfl_k or 1))
    bandits = [Ucb1(len(arms), cfg.ucb_c, None if cfg.prior_mean is None else cfg.prior_mean[g], cfg.prior_count)
               for g in range(1 if cfg.mode == "bandit_global" else K_max)] if cfg.mode in ("bandit", "bandit_global") else []
    val, test = np.zeros(R + 1), np.zeros(R + 1)
    betas = np.zeros((R, K_max))
    arm_val = np.zeros((R, K_max, len(arms)))
    regret = np.zeros(R)
    trained_val: np.ndarray | None = None          # per client: validation correct of last round's trained model
    local_val = np.zeros((R, K_max))

    def fused_models(b_of_cluster: np.ndarray) -> np.ndarray:
        common = _avg(uploads, weights, cfg.common) if len(cfg.common) else np.zeros_like(theta0)
        out = np.empty_like(uploads)
        for g in range(int(clusters.max()) + 1):
            members = np.flatnonzero(clusters == g)
            if members.size:
                s = _avg(uploads, weights, members)
                b = float(b_of_cluster[g])
                out[members] = s if b == 1.0 else b * s + (1.0 - b) * common
        return out

    for r in range(R):
        if cfg.mode == "gcfl" and r == cfg.gcfl_warmup and n > 1:
            clusters = agglomerative(cosine_similarity(updates, centre=False), k=min(cfg.gcfl_k, n))
        K = int(clusters.max()) + 1
        # every arm's validation accuracy per cluster (the oracle's view; the bandit sees only its arm's)
        for a, b in enumerate(arms):
            models = fused_models(np.full(K_max, b))
            for g in range(K):
                members = np.flatnonzero(clusters == g)
                arm_val[r, g, a] = sum(_correct(models[i], data[i], data[i].val, C) for i in members) / max(val_n[members].sum(), 1)
        if cfg.mode == "bandit":
            pick = np.array([bandits[g].choose() for g in range(K)] + [0] * (K_max - K))
        elif cfg.mode == "bandit_global":
            pick = np.full(K_max, bandits[0].choose())
        elif cfg.mode == "oracle":
            pick = np.array([int(np.argmax(arm_val[r, g])) for g in range(K)] + [0] * (K_max - K))
        else:
            pick = np.zeros(K_max, dtype=np.int64)
        chosen_b = arms[pick]
        betas[r] = chosen_b
        models = fused_models(chosen_b)
        val[r] = sum(_correct(models[i], data[i], data[i].val, C) for i in range(n)) / val_n.sum()
        test[r] = sum(_correct(models[i], data[i], data[i].test, C) for i in range(n)) / test_n.sum()
        best = sum(arm_val[r, g].max() * val_n[clusters == g].sum() for g in range(K)) / val_n.sum()
        regret[r] = best - val[r]
        if cfg.mode == "bandit" and trained_val is not None:     # round 1 has no trained models to compare with
            for g in range(K):
                members = np.flatnonzero(clusters == g)
                before = trained_val[members].sum() / max(val_n[members].sum(), 1)
                bandits[g].update(int(pick[g]), arm_val[r, g, pick[g]] - before)
        if cfg.mode == "bandit_global" and trained_val is not None:   # one reward: every client's gain
            bandits[0].update(int(pick[0]), (val[r] * val_n.sum() - trained_val.sum()) / val_n.sum())
        for i in range(n):
            uploads[i] = local_train(models[i], data[i], C, problem.local_steps, problem.lr)
        trained_val = np.array([_correct(uploads[i], data[i], data[i].val, C) for i in range(n)])
        for g in range(K):
            members = np.flatnonzero(clusters == g)
            local_val[r, g] = trained_val[members].sum() / max(val_n[members].sum(), 1)
        updates += uploads - models
    K = int(clusters.max()) + 1
    if cfg.mode == "bandit":
        final_b = np.array([arms[bandits[g].best()] for g in range(K)] + [0.0] * (K_max - K))
    elif cfg.mode == "bandit_global":
        final_b = np.full(K_max, arms[bandits[0].best()])
    elif cfg.mode == "oracle":
        final_b = np.zeros(K_max)
        for g in range(K):
            members = np.flatnonzero(clusters == g)
            accs = [sum(_correct(fused_models(np.full(K_max, b))[i], data[i], data[i].val, C) for i in members)
                    for b in arms]
            final_b[g] = arms[int(np.argmax(accs))]
    else:
        final_b = np.full(K_max, arms[0])
    models = fused_models(final_b)
    val[R] = sum(_correct(models[i], data[i], data[i].val, C) for i in range(n)) / val_n.sum()
    test[R] = sum(_correct(models[i], data[i], data[i].test, C) for i in range(n)) / test_n.sum()
    return PilotRun(val, test, betas, arm_val, regret, clusters, local_val)


def global_prior(per_cluster: np.ndarray, run: PilotRun, val_nodes: np.ndarray) -> np.ndarray:
    """(1, A) prior of the one-beta-for-all bandit (the ablation): the clusters' prior means weighted by their
    validation nodes (the global reward is the node-weighted gain over every client)."""
    w = np.array([val_nodes[run.clusters == g].sum() for g in range(per_cluster.shape[0])], dtype=np.float64)
    return (per_cluster * w[:, None]).sum(axis=0, keepdims=True) / max(w.sum(), 1.0)


def prior_from(run: PilotRun, clusters: int) -> np.ndarray:
    """(K, A) prior means of the bandit from a pilot run that saw every arm: each arm's mean reward over rounds
    2..R, the reward as the runtime computes it (the arm's fused models' validation accuracy minus the accuracy
    of the models the cluster trained the round before)."""
    out = np.zeros((clusters, run.arm_val.shape[2]))
    R = run.arm_val.shape[0]
    for g in range(min(clusters, run.arm_val.shape[1])):
        if R < 2:
            continue
        out[g] = (run.arm_val[1:, g, :] - run.local_val[:-1, g][:, None]).mean(axis=0)
    return out
