"""The serving processes: one verifier node and drafter nodes, run as Ray actors (or in-process for tests).

A drafter node holds one neural drafter (an early-exit model: the target's first k layers with its norm and
head) and the n-gram lookup; a verifier node holds the target. Every method returns the thread CPU seconds
it spent, which the engine scales to the node's emulated speed. Models are built inside the node's process
(real SmolLM2 weights from the test bed's cache, or the tiny random model from a config and a seed).
"""
from __future__ import annotations

import copy
import os
import time
from typing import Any, Mapping, Sequence

from runtime.spec_serve.decoding import EarlyExitDrafter, NgramDrafter, Sparse, Verifier, as_mapping, fuse, pick


def build_target(model: Mapping[str, Any]) -> Any:
    """The target model from the runtime record: real weights (`name`) or the tiny random model (`config`)."""
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    if model.get("tiny"):
        import transformers

        torch.manual_seed(int(model["seed"]))
        cfg = transformers.LlamaConfig(**dict(model["config"]))
        return transformers.LlamaForCausalLM(cfg).eval()
    from testbeds.smollm2 import load_model

    return load_model(str(model["name"]))


def build_early_exit(model: Mapping[str, Any], layers: int) -> Any:
    """The target's first `layers` blocks with its final norm and tied head."""
    if model.get("tiny"):
        m = copy.deepcopy(build_target(model))
        m.model.layers = m.model.layers[:layers]
        m.config.num_hidden_layers = layers
        return m
    from testbeds.smollm2 import load_model

    return load_model(f"{str(model['name']).split(':')[0]}:{layers}L")


def model_key(model: Mapping[str, Any]) -> str:
    """What determines the target's weights (a distilled drafter's cache key part): the name, or the tiny
    model's config and seed."""
    import json

    keep = dict(model) if model.get("tiny") else {k: v for k, v in model.items() if k not in ("seed",)}
    if not model.get("tiny"):
        from testbeds.smollm2 import GGUF_SHA256

        keep["weights"] = GGUF_SHA256
    return json.dumps(keep, sort_keys=True, default=str)


def distill_spec(drafter: Mapping[str, Any]) -> Any:
    """The DistillSpec of a `distilled` drafter record."""
    from testbeds.distill import DistillSpec

    return DistillSpec(**dict(drafter["spec"]))


def build_drafter(model: Mapping[str, Any], drafter: Mapping[str, Any]) -> Any:
    """A neural drafter's model: `early_exit` (the target's first K blocks) or `distilled` (K blocks distilled
    per domain, read from the cache; testbeds/distill.py)."""
    if drafter["kind"] == "early_exit":
        return build_early_exit(model, int(drafter["layers"]))
    from testbeds.distill import load_blocks, weights_path

    path = weights_path(model_key(model), distill_spec(drafter))
    if not path.exists():
        raise FileNotFoundError(f"distilled drafter {drafter['name']} is not built ({path} missing): run "
                                "python benchmarks/spec_serve_drafters.py, or plan again")
    return load_blocks(build_early_exit(model, int(drafter["layers"])), path)


def loaded_model(loaded: dict[str, Any] | None, model: Mapping[str, Any],
                 drafter: Mapping[str, Any] | None = None) -> Any:
    """The target (`drafter` None) or a drafter's module, built once per `loaded` dict and reused after (the
    weights are read-only while serving; every KV cache lives in the node objects, never in the module).
    `loaded` None: built afresh."""
    import json

    key = json.dumps([dict(model), dict(drafter) if drafter is not None else None], sort_keys=True, default=str)
    if loaded is not None and key in loaded:
        return loaded[key]
    m = build_target(model) if drafter is None else build_drafter(model, drafter)
    if loaded is not None:
        loaded[key] = m
    return m


class DrafterNode:
    """One drafter node: a neural drafter (or none) and the n-gram lookup, with KV caches per request."""

    def __init__(self, name: str, model: Mapping[str, Any], drafter: Mapping[str, Any] | None, top_k: int = 8,
                 loaded: dict[str, Any] | None = None) -> None:
        self.name = name
        self.neural = None
        self.neural_name = None
        if drafter is not None:
            self.neural = EarlyExitDrafter(loaded_model(loaded, model, drafter), top_k)
            self.neural_name = str(drafter["name"])
        self.ngram = NgramDrafter()
        self.alive = True

    def ping(self) -> str:
        return self.name

    def _side(self, kind: str) -> Any:
        return self.ngram if kind == "ngram" else self.neural

    def next_probs(self, kind: str, rid: str, seq: Sequence[int]) -> tuple[Sparse, float]:
        """One drafter's sparse next-token distribution (for fusion across nodes)."""
        t0 = time.thread_time()
        out = self._side(kind).next_probs(rid, seq)
        return out, time.thread_time() - t0

    def draft(self, kinds: Sequence[str], weights: Sequence[float], rid: str, seq: Sequence[int], gamma: int,
              greedy: bool, seed: int, tau_conf: float = 0.0) -> tuple[list[int], list[Sparse], float]:
        """Up to `gamma` draft tokens fused over drafters on this node (neural and/or n-gram)."""
        import torch

        t0 = time.thread_time()
        gen = torch.Generator().manual_seed(int(seed))
        cur = list(seq)
        toks: list[int] = []
        qs: list[Sparse] = []
        for _ in range(gamma):
            q = fuse([self._side(k).next_probs(rid, cur) for k in kinds], weights)
            if not q or max(q.values()) < tau_conf:
                break
            x = pick(q, greedy, gen)
            toks.append(x)
            qs.append(q)
            cur.append(x)
        return toks, qs, time.thread_time() - t0

    def release(self, rid: str) -> None:
        if self.neural is not None:
            self.neural.release(rid)


class VerifierNode:
    """The verifier: the target model with a KV cache per request."""

    def __init__(self, model: Mapping[str, Any], loaded: dict[str, Any] | None = None) -> None:
        self.verifier = Verifier(loaded_model(loaded, model))

    def ping(self) -> str:
        return "verifier"

    def verify(self, rid: str, seq: Sequence[int], draft: Sequence[int], proposals: Sequence[Mapping[int, float]],
               greedy: bool, seed: int) -> tuple[list[int], int, float]:
        r = self.verifier.verify(rid, seq, draft, [as_mapping(q) for q in proposals], greedy, seed)
        return r.tokens, r.accepted, r.cpu_s

    def verify_batch(self, items: Sequence[tuple[str, Sequence[int], Sequence[int], Sequence[Mapping[int, float]],
                                                 bool, int]]) -> tuple[list[tuple[list[int], int]], float]:
        """Every item's draft verified in one forward; ([(tokens, accepted)], batch CPU seconds)."""
        res, cpu = self.verifier.verify_batch([(rid, seq, d, [as_mapping(q) for q in qs], g, sd)
                                               for rid, seq, d, qs, g, sd in items])
        return [(r.tokens, r.accepted) for r in res], cpu

    def release(self, rid: str) -> None:
        self.verifier.release(rid)


class Local:
    """In-process handle with the same call shape as a Ray actor handle (`h.call("method", ...)`)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.obj, method)(*args)

    def call_many(self, calls: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        return [getattr(self.obj, m)(*a) for m, a in calls]


class RayHandle:
    """A Ray actor handle: calls block on the result (`ray.get`)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def call(self, method: str, *args: Any) -> Any:
        import ray

        return ray.get(getattr(self.actor, method).remote(*args))


def start_ray(repo_root: str, cache_dir: str | None) -> None:
    """A local Ray instance whose workers import this repository and use one torch thread."""
    import ray

    if ray.is_initialized():
        return
    env = {"PYTHONPATH": repo_root, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if cache_dir:
        env["PLANNER_CACHE_DIR"] = cache_dir
    ray.init(num_cpus=8, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": env}, configure_logging=False)


def make_nodes(model: Mapping[str, Any], drafter_nodes: Mapping[str, Mapping[str, Any] | None], transport: str,
               repo_root: str = ".", cache_dir: str | None = None,
               loaded: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """Start the verifier and every drafter node; returns (verifier, drafters by node, failures by node).
    A drafter node that fails to start is reported in `failures` (the engine re-routes its domains).
    `loaded` (local transport only): modules already built in this process, reused (see `loaded_model`)."""
    failures: dict[str, str] = {}
    if transport == "local":
        ver = Local(VerifierNode(model, loaded))
        nodes = {n: Local(DrafterNode(n, model, d, loaded=loaded)) for n, d in drafter_nodes.items()}
        return ver, nodes, failures
    import ray

    start_ray(repo_root, cache_dir)
    ver_actor = ray.remote(num_cpus=1)(VerifierNode).remote(model)
    handles = {n: ray.remote(num_cpus=1)(DrafterNode).remote(n, model, d) for n, d in drafter_nodes.items()}
    ver = RayHandle(ver_actor)
    ver.call("ping")
    nodes = {}
    for n, h in handles.items():
        try:
            ray.get(h.ping.remote(), timeout=600)
            nodes[n] = RayHandle(h)
        except Exception as exc:   # noqa: BLE001  (any start failure: the node is reported unreachable)
            failures[n] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return ver, nodes, failures


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
