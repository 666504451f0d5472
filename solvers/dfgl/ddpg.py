"""Duplex's learning-driven controller: a DDPG agent trained in the planner's own simulator (numpy only).

Actor mu(s) -> raw action in (0, 1)^(m*m + m) (link scores, ratio knobs), decoded by
core.dfgl_policy.decode_action; critic Q(s, a). Reward of a round: -J / J_rule, the round objective
(seconds per unit of surrogate progress plus the consensus penalty) relative to the rule controller's in the
same situation, so rewards are about -1 whatever the instance's scale. Episodes replay the problem's rounds
with the link rates perturbed (seeded, log-normal per link and episode) so the agent sees varied networks.

At plan time the actor proposes and the cost model disposes: from the actor's decoded topology, a link local
search under the surrogate (ratios solved exactly on a grid for each candidate topology) refines the action. The runtime's online mode runs the actor alone (core.dfgl_policy.actor_forward).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from core.dfgl_policy import RuleController, actor_forward, decode_action, state_size
from solvers.common import Stopwatch, TraceEvent
from solvers.dfgl.exact import MAX_WORKERS, one_round_oracle
from solvers.dfgl.problem import DfglProblem
from solvers.dfgl.ratio_search import multi_start_search, start_topologies
from solvers.dfgl.rollout import Controller, Observation, initial_observation, step


@dataclass(frozen=True)
class DdpgConfig:
    """Training knobs (all seeded)."""

    episodes: int = 40
    hidden: int = 64
    gamma: float = 0.5
    actor_lr: float = 1e-3
    critic_lr: float = 3e-3
    tau: float = 0.05
    batch: int = 64
    noise: float = 0.3              # exploration noise, std in logit space
    link_jitter: float = 0.3        # std of the log-normal link-rate perturbation per episode
    grid_points: int = 10           # plan-time ratio grid (r_min .. 1)
    max_moves: int = 20             # plan-time link toggles from the actor's topology
    exact_up_to: int = 5            # plan-time search is the exhaustive one-round search up to this many workers
    rule_ratio: float = 0.5         # the rule controller's base ratio (the reward's reference)
    seed: int = 0


@dataclass
class _Adam:
    lr: float
    m: dict = field(default_factory=dict)
    v: dict = field(default_factory=dict)
    t: int = 0

    def step(self, params: dict, grads: dict) -> None:
        self.t += 1
        for k, g in grads.items():
            self.m[k] = 0.9 * self.m.get(k, 0.0) + 0.1 * g
            self.v[k] = 0.999 * self.v.get(k, 0.0) + 0.001 * g * g
            mh = self.m[k] / (1 - 0.9 ** self.t)
            vh = self.v[k] / (1 - 0.999 ** self.t)
            params[k] -= self.lr * mh / (np.sqrt(vh) + 1e-8)


def _init(rng: np.random.Generator, n_in: int, n_h: int, n_out: int, out_scale: float) -> dict:
    return {"w1": rng.normal(0, 1 / np.sqrt(n_in), (n_h, n_in)), "b1": np.zeros(n_h),
            "w2": rng.normal(0, out_scale / np.sqrt(n_h), (n_out, n_h)), "b2": np.zeros(n_out)}


def _critic(q: dict, s: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Batch critic: x = [s, a] (B, S + A) -> relu hidden -> (B,)."""
    x = np.concatenate([s, a], axis=1)
    z = x @ q["w1"].T + q["b1"]
    h = np.maximum(z, 0.0)
    return (h @ q["w2"].T + q["b2"])[:, 0], (x, z, h)


def _actor_batch(pa: dict, s: np.ndarray) -> tuple[np.ndarray, tuple]:
    z1 = s @ pa["w1"].T + pa["b1"]
    h = np.tanh(z1)
    a = 1.0 / (1.0 + np.exp(-(h @ pa["w2"].T + pa["b2"])))
    return a, (s, h, a)


@dataclass(frozen=True)
class TrainedAgent:
    """The actor's weights and the training record (per-episode mean reward and objective vs the rule's)."""

    actor: dict
    record: tuple[TraceEvent, ...]
    wall_time_s: float


def _jittered(p: DfglProblem, rng: np.random.Generator, std: float) -> DfglProblem:
    m = p.num_workers
    f = np.exp(rng.normal(0, std, (m, m)))
    f = np.sqrt(f * f.T)
    return replace(p, bandwidth_Bps=p.bandwidth_Bps * f[None])


def _rule_ref(p: DfglProblem, k: int, obs: Observation, rc: RuleController) -> float:
    """The rule controller's round objective in the same situation (the reward's scale)."""
    a, r = rc.act(obs.consensus, obs.bandwidth_Bps, obs.allowed)
    return step(p, k, obs, a, r)[0]


def train(p: DfglProblem, cfg: DdpgConfig = DdpgConfig()) -> TrainedAgent:
    """Train the agent on `p`'s rounds in the simulator; deterministic for a given seed."""
    watch = Stopwatch()
    rng = np.random.default_rng(cfg.seed)
    m = p.num_workers
    s_n, a_n = state_size(m), m * m + m
    actor = _init(rng, s_n, cfg.hidden, a_n, 0.1)
    critic = _init(rng, s_n + a_n, cfg.hidden, 1, 1.0)
    actor_t = {k: v.copy() for k, v in actor.items()}
    critic_t = {k: v.copy() for k, v in critic.items()}
    opt_a, opt_c = _Adam(cfg.actor_lr), _Adam(cfg.critic_lr)
    buf_s, buf_a, buf_r, buf_s2, buf_d = [], [], [], [], []
    record = []
    for ep in range(cfg.episodes):
        q = _jittered(p, rng, cfg.link_jitter)
        rc = RuleController(q.degree, cfg.rule_ratio, q.r_min, q.c_max, q.cross_edges, q.local_edges)
        obs = initial_observation(q)
        rewards, rel = [], []
        for k in range(q.rounds):
            s = obs.state(q.c_max)
            raw = actor_forward(actor, s)
            logit = np.log(raw / (1 - raw)) + rng.normal(0, cfg.noise, raw.shape)
            a_raw = 1.0 / (1.0 + np.exp(-logit))
            adj, ratios = decode_action(a_raw, m, q.degree, q.r_min, obs.bandwidth_Bps, obs.allowed)
            j_ref = _rule_ref(q, k, obs, rc)
            j, _, obs2 = step(q, k, obs, adj, ratios)
            reward = -j / max(j_ref, 1e-12)
            buf_s.append(s); buf_a.append(a_raw); buf_r.append(reward)
            buf_s2.append(obs2.state(q.c_max)); buf_d.append(1.0 if k == q.rounds - 1 else 0.0)
            rewards.append(reward); rel.append(j / max(j_ref, 1e-12))
            obs = obs2
            if len(buf_s) >= cfg.batch:
                idx = rng.integers(0, len(buf_s), cfg.batch)
                S, A = np.asarray(buf_s)[idx], np.asarray(buf_a)[idx]
                R, S2, D = np.asarray(buf_r)[idx], np.asarray(buf_s2)[idx], np.asarray(buf_d)[idx]
                a2, _ = _actor_batch(actor_t, S2)
                q2, _ = _critic(critic_t, S2, a2)
                y = R + cfg.gamma * (1 - D) * q2
                qv, (x, z, h) = _critic(critic, S, A)
                g = 2 * (qv - y)[:, None] / cfg.batch                          # dL/dq (B, 1)
                gh = g @ critic["w2"] * (z > 0)
                opt_c.step(critic, {"w2": g.T @ h, "b2": g.sum(0), "w1": gh.T @ x, "b1": gh.sum(0)})
                # actor: ascend Q(s, mu(s))
                a_mu, (_, ha, _) = _actor_batch(actor, S)
                _, (x2, z2, _) = _critic(critic, S, a_mu)
                dq_dx = ((critic["w2"] * (z2 > 0)) @ critic["w1"])              # (B, S + A)
                dq_da = dq_dx[:, s_n:]
                gz = -(dq_da * a_mu * (1 - a_mu)) / cfg.batch                   # minimise -Q
                gha = gz @ actor["w2"] * (1 - ha ** 2)
                opt_a.step(actor, {"w2": gz.T @ ha, "b2": gz.sum(0), "w1": gha.T @ S, "b1": gha.sum(0)})
                for src, dst in ((actor, actor_t), (critic, critic_t)):
                    for key in src:
                        dst[key] = (1 - cfg.tau) * dst[key] + cfg.tau * src[key]
        record.append(TraceEvent("ddpg", ep, {"mean_reward": round(float(np.mean(rewards)), 6),
                                              "objective_vs_rule": round(float(np.mean(rel)), 6)}))
    return TrainedAgent(actor, tuple(record), watch.elapsed())


def ratio_grid(p: DfglProblem, points: int) -> np.ndarray:
    """The plan-time ratio grid: `points` values from r_min to 1."""
    return np.linspace(p.r_min, 1.0, max(points, 2))


def ddpg_controller(p: DfglProblem, agent: TrainedAgent, cfg: DdpgConfig = DdpgConfig(),
                    refine: bool = True) -> Controller:
    """The plan-time controller: the actor's decoded action, refined (refine=True) under the surrogate with the
    ratios solved exactly on a grid: for at most `cfg.exact_up_to` workers by the exhaustive search over every
    connected topology (exact on the grid), above by link local searches from the actor's topology and from
    rate-ranked ones (maximum spanning tree, each worker's d fastest links for every d)."""
    m = p.num_workers
    grid = ratio_grid(p, cfg.grid_points)

    def act(k: int, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        raw = actor_forward(agent.actor, obs.state(p.c_max))
        adj, ratios = decode_action(raw, m, p.degree, p.r_min, obs.bandwidth_Bps, obs.allowed)
        if not refine:
            return adj, ratios
        j_actor = step(p, k, obs, adj, ratios)[0]
        if m <= min(cfg.exact_up_to, MAX_WORKERS):
            j, adj2, ratios2 = one_round_oracle(p, k, obs.consensus, grid, obs.losses)
        else:
            j, adj2, ratios2 = multi_start_search(p, k, [adj] + start_topologies(p, k), obs.consensus, grid,
                                                  cfg.max_moves, obs.losses)
        return (adj2, ratios2) if j < j_actor else (adj, ratios)

    return act
