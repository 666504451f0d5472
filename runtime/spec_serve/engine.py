"""The serving loop: routing, drafting on drafter nodes, batched verification, γ control, emulated clock.

Every draft and every verification really runs (Ray actors or in-process nodes). Time is EMULATED: each call's
thread CPU seconds on this machine are scaled to its node's speed (`scale` = emulated seconds per CPU second),
links add their configured delay and bytes/rate, and the cycles are laid out on a clock:

  pipelined (two groups alternate): while the verifier checks group A's drafts, the drafters draft group B;
      cycle = max(T_verify(A), T_draft(B) + link)
  not pipelined (one group): cycle = T_draft + link + T_verify
  target-only: cycle = T_verify with no draft (one token per request and forward)

Verification batches are chosen each cycle by `select(values, costs, tokens, budget, cap)` (the planner passes
its LP + rounding; the default takes requests oldest first while the budget (the token cap) holds). γ adapts per
request within the plan's bounds (+1 when the whole draft was accepted, −1 when fewer than half were). A node
that dies mid-run (`kill`) or fails to start has its requests re-routed to the domain's next set whose nodes
are alive (or to target-only decoding); the receipt says so.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from runtime.spec_serve.decoding import commit, fuse, pick

NGRAM = "ngram"
Select = Callable[[Sequence[float], Sequence[float], Sequence[float], float, float], Sequence[int]]


@dataclass
class Request:
    """One request: prompt ids, routed domain, arrival (emulated s)."""

    rid: str
    ids: list[int]
    domain: str
    arrival_s: float
    max_new_tokens: int
    true_domain: str = ""
    out: list[int] = field(default_factory=list)
    done: bool = False
    finish_s: float = 0.0
    gamma: int = 0
    set_: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    draft: list[int] | None = None
    qs: list[Any] = field(default_factory=list)
    verifies: int = 0
    tokens_per_verify: list[int] = field(default_factory=list)
    steps: int = 0
    rerouted: str = ""


def oldest_first(values: Sequence[float], costs: Sequence[float], tokens: Sequence[float], budget: float,
                 cap: float) -> list[int]:
    """Default batch rule: in order while the budget and cap hold (at least one)."""
    out, c, k = [], 0.0, 0.0
    for i in range(len(values)):
        if c + costs[i] <= budget and k + tokens[i] <= cap:
            out.append(i)
            c += costs[i]
            k += tokens[i]
    return out or ([0] if len(values) else [])


def _seed(rid: str, step: int, base: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{base}:{rid}:{step}".encode()).digest()[:4], "little")


class Engine:
    """Serves requests under one configuration record (codegen/spec_serve.py writes it)."""

    def __init__(self, cfg: Mapping[str, Any], verifier: Any, nodes: Mapping[str, Any],
                 select: Select = oldest_first, dead_at_start: Mapping[str, str] | None = None,
                 kill: Mapping[str, int] | None = None) -> None:
        self.cfg = cfg
        self.verifier = verifier
        self.nodes = dict(nodes)
        self.select = select
        self.node_cfg = cfg["nodes"]
        self.alive = {n: n in self.nodes for n in self.node_cfg}
        self.events: list[str] = [f"node {n} unreachable at start ({why}): its domains re-routed"
                                  for n, why in (dead_at_start or {}).items()]
        self.kill = dict(kill or {})
        self.greedy = bool(cfg["greedy"])
        self.verify_cpu_s = 0.0
        self.busy: dict[str, float] = {n: 0.0 for n in self.node_cfg}
        self.hub_busy = 0.0

    # ------------------------------------------------------------ routing
    def _host(self, drafter: str, rid: str = "") -> str | None:
        """The alive node hosting `drafter` for request `rid`: replicas share requests round-robin by request
        number (the cost model divides a drafter's load among its replicas)."""
        hosts = sorted(n for n, c in self.node_cfg.items() if c.get("drafter") == drafter and self.alive.get(n))
        if not hosts:
            return None
        digits = "".join(ch for ch in rid if ch.isdigit())
        return hosts[(int(digits) if digits else 0) % len(hosts)]

    def _route(self, r: Request) -> None:
        """The first set of the domain's routing list whose drafters are all alive (else target-only)."""
        for entry in self.cfg["routing"].get(r.domain, []):
            names = tuple(entry["drafters"])
            if all(d == NGRAM or self._host(d) is not None for d in names):
                if r.set_ and names != r.set_:
                    r.rerouted = f"{'+'.join(r.set_)} -> {'+'.join(names)}"
                r.set_, r.weights = names, tuple(float(w) for w in entry["weights"])
                if r.gamma == 0 or r.rerouted:
                    r.gamma = int(entry["gamma"])
                return
        if r.set_:
            r.rerouted = f"{'+'.join(r.set_)} -> target-only"
        r.set_, r.weights, r.gamma = (), (), 0

    # ------------------------------------------------------------ one draft
    def _draft(self, r: Request) -> tuple[float, float]:
        """Draft for r; returns (chain seconds, link seconds) and adds node busy time."""
        seq = r.ids + r.out
        seed = _seed(r.rid, r.steps, int(self.cfg["seed"]))
        neural = [d for d in r.set_ if d != NGRAM]
        hosts = [self._host(d, r.rid) for d in neural]
        if not neural:       # n-gram alone: looked up on the hub (the verifier node), no link
            import time

            from runtime.spec_serve.decoding import NgramDrafter

            t0 = time.thread_time()
            toks, qs = self._local_ngram(NgramDrafter(), seq, r.gamma)
            t = (time.thread_time() - t0) * float(self.cfg["verifier"]["scale"])
            self.hub_busy += t
            r.draft, r.qs = toks, qs
            return 0.0, 0.0          # hub time: serial with verification (added to T_verify), not a chain
        if len(set(hosts)) == 1:     # every neural drafter of the set on one node: fused there
            n = hosts[0]
            toks, qs, cpu = self.nodes[n].call("draft", list(r.set_), list(r.weights), r.rid, seq, r.gamma,
                                               self.greedy, seed, float(self.cfg.get("tau_conf", 0.0)))
            t = cpu * float(self.node_cfg[n]["scale"])
            r.draft, r.qs = toks, qs
            if self.node_cfg[n].get("colocated"):      # drafting on the verifier itself: serial with verification
                self.hub_busy += t
                return 0.0, 0.0
            self.busy[n] += t
            return t, self._link(n, len(toks))
        # drafters on several nodes: fused at the hub position by position (one hop out and back per token)
        import torch

        gen = torch.Generator().manual_seed(seed)
        cur, toks, qs, chain = list(seq), [], [], 0.0
        hop = 2.0 * max(float(self.node_cfg[n]["delay_s"]) for n in hosts)
        from runtime.spec_serve.decoding import NgramDrafter

        for _ in range(r.gamma):
            props, step = [], 0.0
            for d in r.set_:
                if d == NGRAM:
                    props.append(NgramDrafter().next_probs(r.rid, cur))
                    continue
                n = self._host(d, r.rid)
                p, cpu = self.nodes[n].call("next_probs", "neural", r.rid, cur)
                t = cpu * float(self.node_cfg[n]["scale"])
                self.busy[n] += t
                step = max(step, t)
                props.append({int(k): float(v) for k, v in p.items()})
            q = fuse(props, r.weights)
            chain += step + hop
            if not q:
                break
            x = pick(q, self.greedy, gen)
            toks.append(x)
            qs.append(q)
            cur.append(x)
        r.draft, r.qs = toks, qs
        return chain, self._link(hosts[0], len(toks))

    def _local_ngram(self, d: Any, seq: list[int], gamma: int) -> tuple[list[int], list[Any]]:
        cur, toks, qs = list(seq), [], []
        for _ in range(gamma):
            q = d.next_probs("", cur)
            if not q:
                break
            x = pick(q, True, None)
            toks.append(x)
            qs.append(q)
            cur.append(x)
        return toks, qs

    def _link(self, node: str, n_tokens: int) -> float:
        c = self.node_cfg[node]
        bits = 8.0 * (8 + n_tokens * (4 + 8 * 12))
        return 2.0 * float(c["delay_s"]) + bits / float(c["rate_bps"])

    # ------------------------------------------------------------ serving loop
    def serve(self, requests: list[Request], progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
        """Serve every request; returns the measured totals and per-request rows."""
        pipelined = bool(self.cfg["pipelined"])
        cap = int(self.cfg["group"])
        token_cap = float(self.cfg.get("token_cap", 256))
        gmin, gmax = (int(x) for x in self.cfg["gamma_bounds"])
        adaptive = bool(self.cfg["adaptive"])
        vscale = float(self.cfg["verifier"]["scale"])
        a, b = (float(x) for x in self.cfg["verify_cpu_s"])
        etab = self.cfg.get("expected_tokens", {})
        waiting = sorted(requests, key=lambda r: (r.arrival_s, r.rid))
        groups: list[list[Request]] = [[], []] if pipelined else [[]]
        t, k, finished = 0.0, 0, 0
        last_draft = last_verify = 0.0       # the previous cycle's phase times (the γ controller's balance)
        t_draft_total = t_verify_total = 0.0
        cycles = []
        while finished < len(requests):
            for n, at in list(self.kill.items()):
                if k == at and self.alive.get(n):
                    self.alive[n] = False
                    hit = [r.rid for g in groups for r in g if any(self._host(d) is None for d in r.set_ if d != NGRAM)]
                    for g in groups:
                        for r in g:
                            if any(self._host(d) is None for d in r.set_ if d != NGRAM):
                                self._route(r)
                                r.draft = None
                    self.events.append(f"node {n} died at cycle {k} (emulated t={t:.3f} s): requests "
                                       f"{', '.join(hit) or 'none'} re-routed")
            while waiting and waiting[0].arrival_s <= t + 1e-12 and sum(len(g) for g in groups) < cap * len(groups):
                r = waiting.pop(0)
                self._route(r)
                min(groups, key=len).append(r)
            if not any(groups):
                t = waiting[0].arrival_s
                continue
            if pipelined:
                ver_g, dr_g = groups[k % 2], groups[(k + 1) % 2]
            else:
                ver_g = dr_g = groups[0]
            # ---- drafting
            busy0 = dict(self.busy)
            hub0 = self.hub_busy
            chains, links = [0.0], [0.0]
            for r in dr_g:
                if r.draft is None and r.set_ and r.gamma > 0:
                    c, lk = self._draft(r)
                    chains.append(c)
                    links.append(lk)
            node_t = [self.busy[n] - busy0[n] for n in self.busy]
            t_draft = max(max(node_t, default=0.0), max(chains)) + max(links)
            hub_t = self.hub_busy - hub0
            # ---- verification batch
            ready = [r for r in ver_g if r.draft is not None or not r.set_ or r.gamma == 0]
            values = [float(etab.get(r.domain, {}).get(str(len(r.draft or [])), 1.0 + 0.5 * len(r.draft or [])))
                      * (1.0 + 0.1 * r.verifies) for r in ready]
            costs = [(a + b * (len(r.draft or []) + 1)) * vscale for r in ready]
            toks_n = [len(r.draft or []) + 1 for r in ready]
            # budget: the token cap only unless the plan sets `verify_budget_s` (deferring a ready request makes it
            # wait for its group's next turn while the verifier idles: measured to halve goodput at batch cap 2
            # when the budget was the drafters' cycle). The LP chooses the batch under the token cap.
            budget = float(self.cfg.get("verify_budget_s", float("inf")))
            chosen = [ready[i] for i in self.select(values, costs, toks_n, budget, token_cap)] if ready else []
            # one forward verifies the whole batch (runtime/spec_serve/decoding.py: Verifier.verify_batch)
            items = [(r.rid, r.ids + r.out, list(r.draft or []), list(r.qs), self.greedy,
                      _seed(r.rid, r.steps, int(self.cfg["seed"]) + 1)) for r in chosen]
            verdicts, cpu = self.verifier.call("verify_batch", items) if items else ([], 0.0)
            t_verify = cpu * vscale
            for r, (toks, acc) in zip(chosen, verdicts):
                draft = r.draft or []
                r.steps += 1
                r.verifies += 1
                r.tokens_per_verify.append(len(toks))
                added, done = commit(r.out, toks, r.max_new_tokens, tuple(self.cfg["eos"]))
                if adaptive and draft:
                    # lengthen on a fully accepted draft only while the drafters keep up (T_draft <= T_verify);
                    # shorten when acceptance drops or the drafters are the bottleneck (the verifier idles)
                    drafters_slow = pipelined and last_draft > 1.1 * last_verify
                    if acc == len(draft) and not drafters_slow and last_draft <= last_verify:
                        r.gamma = min(gmax, r.gamma + 1)
                    elif acc < len(draft) / 2 or drafters_slow:
                        r.gamma = max(gmin, r.gamma - 1)
                r.draft, r.qs = None, []
                if done:
                    r.done = True
            t_verify += hub_t
            self.verify_cpu_s += t_verify
            if pipelined:
                dur = max(t_verify, t_draft)
            else:
                dur = t_draft + t_verify
            dur = max(dur, 1e-9)
            t += dur
            t_draft_total += t_draft
            t_verify_total += t_verify
            cycles.append({"cycle": k, "t_draft_s": t_draft, "t_verify_s": t_verify, "batch": len(chosen)})
            last_draft, last_verify = t_draft, t_verify
            for g in groups:
                for r in [r for r in g if r.done]:
                    r.finish_s = t
                    g.remove(r)
                    finished += 1
                    self.verifier.call("release", r.rid)
                    for n in {self._host(d, r.rid) for d in r.set_ if d != NGRAM} - {None}:
                        self.nodes[n].call("release", r.rid)
            k += 1
            if k % 20 == 0:
                progress(f"cycle {k}: {finished}/{len(requests)} requests done, emulated {t:.2f} s")
        makespan = t
        start = min(r.arrival_s for r in requests)
        tokens = sum(len(r.out) for r in requests)
        lat = sorted(r.finish_s - r.arrival_s for r in requests)
        tpv = [x for r in requests for x in r.tokens_per_verify]
        alive_nodes = [n for n in self.node_cfg if self.busy[n] > 0]
        return {
            "requests": len(requests), "tokens": tokens, "makespan_s": makespan - start,
            "goodput_tps": tokens / max(makespan - start, 1e-12),
            "latency_p50_s": _pct(lat, 50), "latency_p95_s": _pct(lat, 95),
            "tokens_per_verify": sum(tpv) / max(len(tpv), 1), "verifications": len(tpv),
            "verifier_idle": 1.0 - t_verify_total / max(makespan - start, 1e-12),
            "drafter_idle": (1.0 - sum(self.busy[n] for n in alive_nodes) / (len(alive_nodes) * max(makespan - start, 1e-12)))
            if alive_nodes else 1.0,
            "cycles": len(cycles), "events": list(self.events),
            "mean_batch": sum(c["batch"] for c in cycles) / max(sum(1 for c in cycles if c["batch"]), 1),
            "mean_t_draft_s": sum(c["t_draft_s"] for c in cycles) / max(len(cycles), 1),
            "mean_t_verify_s": sum(c["t_verify_s"] for c in cycles) / max(len(cycles), 1),
            "rows": [{"rid": r.rid, "domain": r.domain, "true_domain": r.true_domain, "drafters": "+".join(r.set_) or "target",
                      "tokens": len(r.out), "latency_s": r.finish_s - r.arrival_s,
                      "tokens_per_verify": sum(r.tokens_per_verify) / max(len(r.tokens_per_verify), 1),
                      "rerouted": r.rerouted, "out": list(r.out)} for r in requests],
        }


def _pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return 0.0
    import math

    s = sorted(xs)
    i = min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))
    return float(s[i])


def serve_replicas(cfg: Mapping[str, Any], verifier: Any, nodes: Mapping[str, Any], requests: list[Request],
                   select: Select = oldest_first, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Serve a one-node configuration (target-only, or a drafter co-located with the target) replicated on every
    node of `cfg["replicas"]` (`{"node", "scale"}` each): the router `cfg["router"]` (core/request_router.py)
    sends each request, in arrival order, to one replica, and each replica serves its requests alone with its own
    engine on its node's EMULATED clock (its forwards' thread CPU seconds x that node's scale). The replicas do not
    interact, so one verifier process runs every replica's forwards (labelled: an emulation of R machines, each
    running the same model). Totals as `Engine.serve`'s over all requests (makespan: the last replica's finish);
    each row names its replica."""
    from core.request_router import assign

    reps = list(cfg["replicas"])
    order = sorted(requests, key=lambda r: (r.arrival_s, r.rid))
    where = assign(len(order), [1.0 / float(r["scale"]) for r in reps], str(cfg["router"]))
    results = []
    for i, rep in enumerate(reps):
        sub = [r for j, r in enumerate(order) if where[j] == i]
        if not sub:
            continue
        c = dict(cfg)
        c["verifier"] = {**dict(cfg["verifier"]), "scale": float(rep["scale"])}
        # a co-located drafter drafts on the replica's own node, at its speed
        c["nodes"] = {n: ({**dict(v), "scale": float(rep["scale"])} if v.get("colocated") else dict(v))
                      for n, v in cfg["nodes"].items()}
        progress(f"replica {rep['node']}: {len(sub)} request(s)")
        res = Engine(c, verifier, nodes, select).serve(sub, progress)
        for row in res["rows"]:
            row["replica"] = rep["node"]
        results.append(res)
    start = min(r.arrival_s for r in requests)
    end = max(r.finish_s for r in requests)
    span = max(end - start, 1e-12)
    tokens = sum(len(r.out) for r in requests)
    lat = sorted(r.finish_s - r.arrival_s for r in requests)
    tpv = [x for r in requests for x in r.tokens_per_verify]
    verify_s = sum(x["mean_t_verify_s"] * x["cycles"] for x in results)
    batched = sum(x["verifications"] / max(x["mean_batch"], 1e-12) for x in results)
    rows = {row["rid"]: row for x in results for row in x["rows"]}
    return {
        "requests": len(requests), "tokens": tokens, "makespan_s": span, "goodput_tps": tokens / span,
        "latency_p50_s": _pct(lat, 50), "latency_p95_s": _pct(lat, 95),
        "tokens_per_verify": sum(tpv) / max(len(tpv), 1), "verifications": len(tpv),
        "verifier_idle": 1.0 - verify_s / (len(results) * span), "drafter_idle": 1.0,
        "cycles": sum(x["cycles"] for x in results),
        "events": [e for x in results for e in x["events"]]
        + [f"replicated on {len(results)} node(s) ({', '.join(r['node'] for r in reps)}), {cfg['router']} router"],
        "mean_batch": len(tpv) / max(batched, 1e-12),
        "mean_t_draft_s": sum(x["mean_t_draft_s"] * x["cycles"] for x in results) / max(sum(x["cycles"] for x in results), 1),
        "mean_t_verify_s": verify_s / max(sum(x["cycles"] for x in results), 1),
        "replicas": {r["node"]: sum(1 for j in range(len(order)) if reps[where[j]]["node"] == r["node"]) for r in reps},
        "rows": [rows[r.rid] for r in requests],
    }
