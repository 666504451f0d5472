"""ΔAcc(v, b): the effect of UAQ-quantising only the output tensor of graph node v to b bits (COACH §3, §7).

The model is captured with torch.export (`profilers.graph.capture`); `ExportedProgram.module()`
gives an fx GraphModule whose node names are those of the profiler's `NodeProfile`s (same graph,
parameters lifted to `get_attr`). A `torch.fx.Interpreter` subclass runs it and replaces the
output of the chosen node(s) by `fake_quantize(out, b)` for *all* consumers: the cut tensor is
what the cloud receives. Quantisation is per tensor per sample (dim 0) by default.

Three measurements, chosen by the model (each a `SensitivityTable` with a `kind`):

* ``accuracy`` — digits-cnn (real trained weights, real labels): paired top-1 accuracy drop
  `acc(fp32) − acc(quantised)`, clipped at 0, on the held-out digits split (359 samples, one batch).
* ``embedding`` — a sentence encoder shipped with real weights (MiniLM): on `SENTENCE_GROUPS`
  (60 built-in sentences in 12 topic groups), `max(1 − mean cos(e, ê), NN drop)` (the first term
  lies in [0, 2]) where `e` is the attention-mask-weighted mean-pooled embedding and the NN task
  asks whether each sentence's nearest other sentence (cosine) is from its own topic group. The
  pooler output is not part of the metric, so the pooler's own nodes measure 0.
* ``proxy`` — any other model (random weights): relative output noise power
  `E‖y − ŷ‖² / E‖y‖² = 10^(−SQNR/10)` of the first floating output on the model's seeded example
  inputs (8 samples). A signal-to-quantisation-noise proxy, not an accuracy.

Speed: one evaluation re-runs only the descendants of the quantised node(s); everything else is
taken from a cached fp32 reference run (`Interpreter.run(initial_env=...)`). In-place ops that
torch.export keeps (`add_` in ResNet) run on copies so the cache stays intact. Table cells run on
`workers` Python threads with single-threaded torch ops (torch releases the GIL; this avoids
OpenMP oversubscription). Cost is about `n_nodes · n_bits · (forward / 2)`: digits-cnn's full
table (8 nodes × 7 bits) takes under a second; MiniLM's 79 non-view candidates × 7 bits cost
about 80 CPU-seconds (≈ 45 s on 2 idle cores, ~100 s on a loaded machine). Callers that need
less pass fewer `nodes` (e.g. the cut vertices they consider) or call
`SensitivityEvaluator.drop` lazily (the planner's binary search for `b*(v)`).

Example:
    >>> table = quant_sensitivity(resolve_model("digits-cnn"))   # doctest: +SKIP
    >>> table.floor("linear", epsilon=0.005)                 # doctest: +SKIP
    3
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import fx

from core.errors import PlannerError
from profilers.flops import VIEW_OPS, op_basename
from profilers.graph import capture
from profilers.model_spec import ModelSpec
from profilers.models import BuiltModel, build_model
from kernels.uniform_quant import fake_quantize

log = logging.getLogger(__name__)

DEFAULT_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 16)
KINDS = ("accuracy", "embedding", "proxy")
PROXY_BATCH = 8
MAX_PROXY_PARAM_BYTES = 4 << 30  # full-size random-weight proxies above this (fp32) must use tiny=True
SENTENCE_SEQ_LEN = 12  # tokens incl. [CLS]/[SEP]; every built-in sentence fits (checked in tests)
_CACHE_SIZE = 2

# Short English sentences in topic groups for the embedding evaluation (no downloads). Wording
# varies within a group so the nearest-neighbour task is not pure word overlap.
SENTENCE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cooking", (
        "Slice the onions and fry them in butter.",
        "This soup needs more salt and pepper.",
        "She baked fresh bread for breakfast.",
        "Simmer the tomato sauce for twenty minutes.",
        "The chef seasoned the grilled chicken.",
    )),
    ("weather", (
        "Heavy rain is expected tomorrow afternoon.",
        "It was sunny and warm all weekend.",
        "The forecast warns of thunderstorms tonight.",
        "Fog covered the valley this morning.",
        "Temperatures will drop below freezing overnight.",
    )),
    ("football", (
        "The striker scored twice in the second half.",
        "Our team lost the match on penalties.",
        "The goalkeeper saved a powerful free kick.",
        "Fans cheered as the referee blew the whistle.",
        "The coach changed tactics at half time.",
    )),
    ("programming", (
        "The program crashed because of a null pointer.",
        "This function returns a sorted list of integers.",
        "The compiler reported a syntax error on line ten.",
        "We fixed the memory leak in the server.",
        "Python scripts are easy to debug.",
    )),
    ("music", (
        "She plays the violin in an orchestra.",
        "The band released a new album today.",
        "He practises piano scales every evening.",
        "That song has a catchy guitar melody.",
        "The choir sang beautifully at the festival.",
    )),
    ("pets", (
        "The cat sleeps on the sofa all day.",
        "Feed the puppy twice a day.",
        "Our kitten knocked a glass off the table.",
        "The vet checked the rabbit's teeth.",
        "He walks his two dogs every morning.",
    )),
    ("travel", (
        "Pack your passport and boarding pass.",
        "The hotel room had a view of the sea.",
        "We missed the train to the airport.",
        "Tourists queued to visit the old castle.",
        "She booked a cheap hostel for the trip.",
    )),
    ("health", (
        "The doctor prescribed antibiotics for the infection.",
        "Regular exercise lowers blood pressure.",
        "He has a fever and a sore throat.",
        "The nurse gave the patient an injection.",
        "She broke her arm and needed surgery.",
    )),
    ("finance", (
        "The bank raised its interest rates again.",
        "Stock prices fell sharply on Monday.",
        "The company reported record quarterly profits.",
        "Inflation made groceries more expensive.",
        "She paid off her mortgage early.",
    )),
    ("space", (
        "The rocket launched a satellite into orbit.",
        "Astronomers discovered a new distant galaxy.",
        "The astronauts returned from the space station.",
        "Mars has two small moons.",
        "A telescope photographed the comet's tail.",
    )),
    ("gardening", (
        "Water the tomato plants early in the morning.",
        "She planted tulip bulbs in the autumn.",
        "Pull the weeds before they spread.",
        "The roses bloomed along the garden fence.",
        "Add compost to improve the soil.",
    )),
    ("driving", (
        "The car would not start this morning.",
        "Traffic on the motorway was very slow.",
        "He got a ticket for speeding.",
        "The mechanic replaced the brake pads.",
        "She parked the van outside the shop.",
    )),
)


# ---------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class SensitivityTable:
    """Measured drops `drop[i, j]` for quantising only `nodes[i]` to `bits[j]` bits.

    `kind` says what a drop is: "accuracy" (fraction of samples), "embedding" (max of
    1 − mean cosine and NN-accuracy drop, fraction) or "proxy" (relative noise power, no unit).
    `baseline` is the unquantised metric (`baseline_metric` names it).
    """

    model: str
    kind: str
    nodes: tuple[str, ...]
    bits: tuple[int, ...]
    drop: np.ndarray
    baseline: float
    baseline_metric: str
    description: str
    n_samples: int
    granularity: str = "per_tensor"
    elapsed_s: float = 0.0

    def drop_at(self, node: str, bits: int) -> float:
        """The measured drop of one cell."""
        return float(self.drop[self.nodes.index(node), self.bits.index(bits)])

    def floor(self, node: str, epsilon: float) -> int | None:
        """Least measured bit width with drop ≤ epsilon (the accuracy floor b*), or None."""
        row = self.drop[self.nodes.index(node)]
        for j in np.argsort(self.bits):
            if row[j] <= epsilon:
                return int(self.bits[j])
        return None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {"model": self.model, "kind": self.kind, "nodes": list(self.nodes), "bits": list(self.bits),
                "drop": [[float(v) for v in row] for row in self.drop], "baseline": self.baseline,
                "baseline_metric": self.baseline_metric, "description": self.description,
                "n_samples": self.n_samples, "granularity": self.granularity, "elapsed_s": self.elapsed_s}


# ---------------------------------------------------------------- metrics
class _Metric:
    """Turns the graph's flat outputs into a drop versus the reference outputs."""

    kind = ""
    baseline_metric = ""
    baseline = 0.0

    def drop(self, outputs: Sequence[Any]) -> float:
        raise NotImplementedError


class _AccuracyMetric(_Metric):
    kind = "accuracy"
    baseline_metric = "top-1 accuracy"

    def __init__(self, reference: Sequence[Any], labels: torch.Tensor) -> None:
        self.labels = labels
        self.baseline = self._acc(reference)

    def _acc(self, outputs: Sequence[Any]) -> float:
        return float((outputs[0].argmax(-1) == self.labels).float().mean())

    def drop(self, outputs: Sequence[Any]) -> float:
        return max(0.0, self.baseline - self._acc(outputs))


class _EmbeddingMetric(_Metric):
    kind = "embedding"
    baseline_metric = "nearest-neighbour same-topic accuracy"

    def __init__(self, reference: Sequence[Any], mask: torch.Tensor, groups: torch.Tensor) -> None:
        self.mask = mask.to(torch.float32).unsqueeze(-1)
        self.groups = groups
        self.ref = self._embed(reference)
        self.baseline = self._nn_acc(self.ref)

    def _embed(self, outputs: Sequence[Any]) -> torch.Tensor:
        h = outputs[0].float()
        e = (h * self.mask).sum(1) / self.mask.sum(1).clamp_min(1.0)
        return torch.nn.functional.normalize(e, dim=-1)

    def _nn_acc(self, e: torch.Tensor) -> float:
        sim = e @ e.T
        sim.fill_diagonal_(-float("inf"))
        return float((self.groups[sim.argmax(-1)] == self.groups).float().mean())

    def drop(self, outputs: Sequence[Any]) -> float:
        e = self._embed(outputs)
        cos_drop = 1.0 - float((e * self.ref).sum(-1).mean())
        return max(cos_drop, self.baseline - self._nn_acc(e), 0.0)


class _ProxyMetric(_Metric):
    kind = "proxy"
    baseline_metric = "output power E‖y‖² per element"

    def __init__(self, reference: Sequence[Any]) -> None:
        self.index = next((i for i, o in enumerate(reference)
                           if isinstance(o, torch.Tensor) and o.is_floating_point()), None)
        if self.index is None:
            raise ValueError("the model has no floating-point output to compare")
        self.ref = reference[self.index].double()
        self.power = float((self.ref ** 2).sum())
        self.baseline = self.power / max(1, self.ref.numel())

    def drop(self, outputs: Sequence[Any]) -> float:
        err = float(((outputs[self.index].double() - self.ref) ** 2).sum())
        return err / self.power if self.power > 0 else (0.0 if err == 0 else float("inf"))


# ---------------------------------------------------------------- interpreter
def _mutated_args(target: Any) -> tuple[tuple[int, str], ...]:
    """(position, name) of the arguments an in-place aten op writes to (torch.export keeps `add_`, ...)."""
    schema = getattr(target, "_schema", None)
    if schema is None:
        return ()
    return tuple((i, a.name) for i, a in enumerate(schema.arguments)
                 if a.alias_info is not None and a.alias_info.is_write)


def _functionalise_uses(gm: fx.GraphModule) -> dict[fx.Node, tuple[tuple[int, str], ...]]:
    """Make in-place nodes safe to re-run on cached values; returns {node: mutated args}.

    A node `m = x.add_(y)` returns `x`; readers of `x` after `m` are rewired to read `m`, so the
    interpreter may run `m` on a copy of `x` and leave the cached `x` untouched.
    """
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    mutating: dict[fx.Node, tuple[tuple[int, str], ...]] = {}
    for m in list(gm.graph.nodes):
        if m.op != "call_function":
            continue
        pos = _mutated_args(m.target)
        if not pos:
            continue
        mutating[m] = pos
        returns_self = bool(m.target._schema.returns) and m.target._schema.returns[0].alias_info is not None
        for i, name in pos:
            a = m.args[i] if i < len(m.args) else m.kwargs.get(name)
            if not isinstance(a, fx.Node):
                continue
            later = [u for u in a.users if u is not m and order[u] > order[m]]
            if later and not returns_self:
                log.warning("%s writes to %s, which is read later; quantised runs may not match", m.name, a.name)
            for u in later if returns_self else []:
                u.replace_input_with(a, m)
    if mutating:
        gm.recompile()
    return mutating


class CloneOnWriteInterpreter(fx.Interpreter):
    """fx.Interpreter that runs in-place ops on copies of their mutated inputs (cached values stay intact)."""

    def __init__(self, module: fx.GraphModule, mutating: Mapping[fx.Node, tuple[tuple[int, str], ...]],
                 garbage_collect_values: bool = True) -> None:
        super().__init__(module, garbage_collect_values=garbage_collect_values)
        self.mutating = mutating

    def run_node(self, n: fx.Node) -> Any:
        pos = self.mutating.get(n)
        if not pos:
            return super().run_node(n)
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            args, kwargs = list(args), dict(kwargs)
            for i, name in pos:
                if i < len(args) and isinstance(args[i], torch.Tensor):
                    args[i] = args[i].clone()
                elif isinstance(kwargs.get(name), torch.Tensor):
                    kwargs[name] = kwargs[name].clone()
            return getattr(self, n.op)(n.target, tuple(args), kwargs)


class QuantizingInterpreter(CloneOnWriteInterpreter):
    """Replaces the outputs of the `assignments` nodes by their UAQ fake-quantised values, for all consumers."""

    def __init__(self, module: fx.GraphModule, assignments: Mapping[str, int],
                 mutating: Mapping[fx.Node, tuple[tuple[int, str], ...]], channel_dim: int | None = None) -> None:
        super().__init__(module, mutating, garbage_collect_values=True)
        self.assignments = dict(assignments)
        self.channel_dim = channel_dim

    def quantise(self, value: Any, bits: int) -> Any:
        """Fake-quantise a floating tensor per sample (per channel too with `channel_dim`); others pass through."""
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return value
        cd = self.channel_dim if self.channel_dim is not None and value.dim() >= 2 else None
        if cd is not None and cd % value.dim() == 0:
            cd = None
        return fake_quantize(value, bits, per_sample=True, channel_dim=cd)

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        bits = self.assignments.get(n.name)
        return out if bits is None else self.quantise(out, bits)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _cpu_count() -> int:
    """CPUs this process may run on (affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _flat_inputs(gm: fx.GraphModule, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[Any]:
    """The placeholder values, in graph order, for `gm(*args, **kwargs)` (what the generated forward does)."""
    import torch.fx._pytree as fx_pytree
    from torch.export._tree_utils import reorder_kwargs

    spec = getattr(gm, "_in_spec", None)
    if spec is None:
        return list(args)
    return list(fx_pytree.tree_flatten_spec((tuple(args), reorder_kwargs(dict(kwargs), spec)), spec))


class SensitivityEvaluator:
    """An exported graph, its fp32 reference run and a metric: evaluates drops for bit assignments."""

    def __init__(self, name: str, gm: fx.GraphModule, inputs: Sequence[Any], metric_factory: Callable[[Sequence[Any]], _Metric],
                 description: str, n_samples: int, channel_dim: int | None = None, keepalive: Any = None) -> None:
        t0 = time.perf_counter()
        self.name = name
        self.gm = gm
        self.channel_dim = channel_dim
        self.n_samples = int(n_samples)
        self._keepalive = keepalive  # the source module, so cache keys on id() stay valid
        self._nodes = {n.name: n for n in gm.graph.nodes}
        self._output = next(n for n in gm.graph.nodes if n.op == "output")
        self._mutating = _functionalise_uses(gm)
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(inputs):
            raise ValueError(f"{name}: graph has {len(placeholders)} inputs, got {len(inputs)}")
        with torch.inference_mode():
            ref = CloneOnWriteInterpreter(gm, self._mutating, garbage_collect_values=False)
            outputs = ref.run(*inputs, enable_io_processing=False)
        self._ref: dict[fx.Node, Any] = dict(ref.env)
        self.reference_outputs = tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)
        self.metric = metric_factory(self.reference_outputs)
        self.kind = self.metric.kind
        self.baseline = self.metric.baseline
        self.description = description.format(baseline=self.baseline)
        self.granularity = "per_tensor" if channel_dim is None else f"per_channel(dim={channel_dim})"
        self.setup_s = time.perf_counter() - t0

    def reference_value(self, name: str) -> Any:
        """The fp32 value of node `name` in the reference run (e.g. a cut feature); do not modify it."""
        return self._ref[self._nodes[name]]

    @property
    def node_names(self) -> list[str]:
        """All node names of the graph, in topological order."""
        return list(self._nodes)

    def candidates(self, include_views: bool = False) -> list[str]:
        """Nodes whose output is a floating tensor consumed by ≥ 1 node other than the graph output.

        Includes floating user inputs (placeholders). Views (reshape, transpose, dropout, ...) are
        left out unless `include_views`: they carry their producer's data.
        """
        out = []
        for n in self.gm.graph.nodes:
            if n.op not in ("placeholder", "call_function", "call_module"):
                continue
            val = self._ref.get(n)
            if not isinstance(val, torch.Tensor) or not val.is_floating_point():
                continue
            if not any(u.op != "output" for u in n.users):
                continue
            if not include_views and n.op == "call_function" and op_basename(n.target) in VIEW_OPS:
                continue
            out.append(n.name)
        return out

    def _descendants(self, roots: Sequence[fx.Node]) -> set[fx.Node]:
        seen: set[fx.Node] = set()
        todo = deque(roots)
        while todo:
            for u in todo.popleft().users:
                if u not in seen:
                    seen.add(u)
                    todo.append(u)
        return seen

    def outputs(self, assignments: Mapping[str, int]) -> tuple[Any, ...]:
        """Flat graph outputs with the assigned nodes quantised; only their descendants are recomputed."""
        unknown = [k for k in assignments if k not in self._nodes]
        if unknown:
            raise KeyError(f"{self.name}: no graph node named {', '.join(unknown[:5])}")
        interp = QuantizingInterpreter(self.gm, assignments, self._mutating, self.channel_dim)
        roots = [self._nodes[k] for k in assignments]
        affected = self._descendants(roots)
        affected.add(self._output)
        env: dict[fx.Node, Any] = {}
        for n, v in self._ref.items():
            if n in affected:
                continue
            bits = assignments.get(n.name)
            env[n] = v if bits is None else interp.quantise(v, bits)
        with torch.inference_mode():
            out = interp.run(initial_env=env, enable_io_processing=False)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    def drop(self, assignments: Mapping[str, int]) -> float:
        """The metric's drop with every node in `assignments` quantised at once (joint check)."""
        if not assignments:
            return 0.0
        return float(self.metric.drop(self.outputs(assignments)))

    def table(self, nodes: Sequence[str] | None = None, bits: Sequence[int] = DEFAULT_BITS,
              workers: int | None = None) -> SensitivityTable:
        """Single-tensor drops for every (node, bits) pair; `nodes` defaults to `candidates()`."""
        names = tuple(self.candidates() if nodes is None else nodes)
        bits = tuple(int(b) for b in bits)
        unknown = [k for k in names if k not in self._nodes]
        if unknown:
            raise KeyError(f"{self.name}: no graph node named {', '.join(unknown[:5])}")
        workers = max(1, int(workers if workers is not None else min(4, _cpu_count())))
        cells = [(i, j) for i in range(len(names)) for j in range(len(bits))]
        drop = np.zeros((len(names), len(bits)), dtype=np.float64)

        def one(cell: tuple[int, int]) -> None:
            i, j = cell
            drop[i, j] = self.drop({names[i]: bits[j]})

        t0 = time.perf_counter()
        if workers == 1 or len(cells) < 2:
            for c in cells:
                one(c)
        else:
            with _torch_threads(1), ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(one, cells))
        elapsed = time.perf_counter() - t0
        log.info("%s: %d nodes x %d bits (%s) in %.2f s on %d worker(s)", self.name, len(names), len(bits),
                 self.kind, elapsed, workers)
        return SensitivityTable(model=self.name, kind=self.kind, nodes=names, bits=bits, drop=drop,
                                baseline=float(self.baseline), baseline_metric=self.metric.baseline_metric,
                                description=self.description, n_samples=self.n_samples,
                                granularity=self.granularity, elapsed_s=round(elapsed, 3))


# ---------------------------------------------------------------- building evaluators
_EVALUATORS: "OrderedDict[tuple[Any, ...], SensitivityEvaluator]" = OrderedDict()


def _spec_and_built(model: Any) -> tuple[ModelSpec, BuiltModel | None]:
    if isinstance(model, BuiltModel):
        return model.spec, model
    if isinstance(model, ModelSpec):
        return model, None
    raise TypeError(f"expected a ModelSpec or BuiltModel, got {type(model).__name__} (resolve names with "
                    "planner.registry.resolve_model)")


def measurement_kind(spec: ModelSpec) -> str:
    """Which measurement a model gets: accuracy (digits-cnn), embedding (packaged encoder), else proxy."""
    if spec.kind == "digits-cnn":
        return "accuracy"
    if spec.kind == "pretrained-package" and spec.task == "encoder":
        return "embedding"
    return "proxy"


def _export(spec: ModelSpec, module: torch.nn.Module, args: tuple[Any, ...],
            kwargs: Mapping[str, Any]) -> tuple[fx.GraphModule, list[Any]]:
    cap = capture(BuiltModel(spec, module, tuple(args), dict(kwargs), False, "cpu"))
    gm = cap.program.module()
    return gm, _flat_inputs(gm, tuple(args), kwargs)


def _digits_evaluator(spec: ModelSpec, built: BuiltModel | None, channel_dim: int | None) -> SensitivityEvaluator:
    from profilers.digits_cnn import SEED, load_digits_data, load_or_train

    module = built.module if built is not None and built.device != "meta" else load_or_train()
    data = load_digits_data(SEED)
    gm, inputs = _export(spec, module.eval(), (data.x_test,), {})
    n = len(data.y_test)
    desc = (f"paired top-1 accuracy drop acc(fp32) − acc(quantised), clipped at 0, of the trained {spec.name} "
            f"(real weights) on the held-out scikit-learn digits split (n={n} samples, seed {SEED}, one batch), "
            "UAQ-quantising only the listed tensor(s); fp32 baseline accuracy {baseline:.4f}")
    return SensitivityEvaluator(spec.name, gm, inputs, lambda ref: _AccuracyMetric(ref, data.y_test), desc, n,
                                channel_dim, keepalive=module)


def sentence_batch(tokenizer: Any, seq_len: int = SENTENCE_SEQ_LEN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, group ids) for `SENTENCE_GROUPS`, padded to `seq_len` tokens."""
    texts = [s for _, group in SENTENCE_GROUPS for s in group]
    groups = torch.tensor([g for g, (_, group) in enumerate(SENTENCE_GROUPS) for _ in group])
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], groups


def _embedding_evaluator(spec: ModelSpec, built: BuiltModel | None, channel_dim: int | None) -> SensitivityEvaluator:
    import transformers

    from profilers.models import package_model_dir

    path = str(package_model_dir(spec))
    module = built.module if built is not None and built.device != "meta" else \
        transformers.AutoModel.from_pretrained(path, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    ids, mask, groups = sentence_batch(tokenizer)
    gm, inputs = _export(spec, module.eval(), (), {"input_ids": ids, "attention_mask": mask})
    n = int(ids.shape[0])
    desc = (f"sentence-embedding drop of {spec.name} (real pretrained weights) on {n} built-in English sentences "
            f"in {len(SENTENCE_GROUPS)} topic groups, padded to {ids.shape[1]} tokens, one batch: "
            "max(1 − mean cosine(fp32, quantised) of attention-mask-weighted mean-pooled embeddings, "
            "drop of nearest-neighbour same-topic accuracy clipped at 0), UAQ-quantising only the listed "
            "tensor(s); fp32 baseline NN accuracy {baseline:.4f}")
    return SensitivityEvaluator(spec.name, gm, inputs, lambda ref: _EmbeddingMetric(ref, mask, groups), desc, n,
                                channel_dim, keepalive=module)


def _proxy_evaluator(spec: ModelSpec, built: BuiltModel | None, tiny: bool,
                     channel_dim: int | None) -> SensitivityEvaluator:
    if built is None or built.device == "meta":
        tiny = tiny if built is None else built.tiny
        if not tiny:
            meta = build_model(spec, tiny=False, device="meta")
            n_params = sum(int(p.numel()) for p in meta.module.parameters())
            if n_params * 4 > MAX_PROXY_PARAM_BYTES:
                raise PlannerError(
                    f"the {measurement_kind(spec)} sensitivity of {spec.name} needs its {n_params / 1e9:.1f} B "
                    "parameters materialised on the CPU", "pass --tiny (random weights at the tiny dimensions)")
        built = build_model(spec, tiny=tiny, device="cpu", batch=PROXY_BATCH)
    gm, inputs = _export(spec, built.module.eval(), tuple(built.args), built.kwargs)
    first = next((a for a in inputs if isinstance(a, torch.Tensor)), None)
    n = int(first.shape[0]) if first is not None and first.dim() > 0 else 1
    desc = (f"signal-to-quantisation-noise proxy, NOT an accuracy: relative output noise power "
            f"E‖y − ŷ‖² / E‖y‖² = 10^(−SQNR/10) of the first floating output of {spec.name} "
            f"({'tiny, ' if built.tiny else ''}seeded random weights) on its seeded example inputs "
            f"(n={n} samples), UAQ-quantising only the listed tensor(s); reference output power "
            "{baseline:.4g} per element")
    return SensitivityEvaluator(spec.name, gm, inputs, _ProxyMetric, desc, n, channel_dim, keepalive=built.module)


def sensitivity_evaluator(model: Any, *, tiny: bool = False, channel_dim: int | None = None) -> SensitivityEvaluator:
    """The (cached) evaluator for a model name, ModelSpec or BuiltModel.

    The exported GraphModule and its fp32 reference activations are kept for the last
    `_CACHE_SIZE` models. `tiny` applies to proxy models built from a spec (full size otherwise:
    random weights at the real dimensions on the CPU).
    """
    spec, built = _spec_and_built(model)
    kind = measurement_kind(spec)
    key = (spec.fingerprint(tiny), kind, tiny, channel_dim, id(built.module) if built is not None else None)
    ev = _EVALUATORS.get(key)
    if ev is not None:
        _EVALUATORS.move_to_end(key)
        return ev
    if kind == "accuracy":
        ev = _digits_evaluator(spec, built, channel_dim)
    elif kind == "embedding":
        ev = _embedding_evaluator(spec, built, channel_dim)
    else:
        ev = _proxy_evaluator(spec, built, tiny, channel_dim)
    log.info("%s: %s evaluator ready in %.2f s (baseline %s = %.4g, %d samples)", spec.name, kind, ev.setup_s,
             ev.metric.baseline_metric, ev.baseline, ev.n_samples)
    _EVALUATORS[key] = ev
    while len(_EVALUATORS) > _CACHE_SIZE:
        _EVALUATORS.popitem(last=False)
    return ev


def clear_cache() -> None:
    """Drop cached evaluators (exported graphs and reference activations)."""
    _EVALUATORS.clear()


def candidate_nodes(model: Any, *, tiny: bool = False, include_views: bool = False) -> list[str]:
    """Candidate cut tensors of a model's exported graph (see `SensitivityEvaluator.candidates`)."""
    return sensitivity_evaluator(model, tiny=tiny).candidates(include_views)


def quant_sensitivity(model: Any, nodes: Sequence[str] | None = None, bits: Sequence[int] = DEFAULT_BITS, *,
                      tiny: bool = False, channel_dim: int | None = None,
                      workers: int | None = None) -> SensitivityTable:
    """ΔAcc(v, b) for every node in `nodes` (default: all candidates) and every b in `bits`."""
    return sensitivity_evaluator(model, tiny=tiny, channel_dim=channel_dim).table(nodes, bits, workers)


def joint_drop(model: Any, assignments: Mapping[str, int], *, tiny: bool = False,
               channel_dim: int | None = None) -> float:
    """The same metric with several tensors quantised at once (the planner's joint check, docs/split-inference.md §3 step 5)."""
    return sensitivity_evaluator(model, tiny=tiny, channel_dim=channel_dim).drop(assignments)


# ------------------------------------------------------------------ cut-tensor sensitivity for the planner
@dataclass(frozen=True)
class CutSensitivity:
    """ΔAcc of quantising one cut tensor alone, per node name and bit width (NaN: not a float tensor)."""

    drops: Mapping[str, Sequence[float]]     # node name -> drop at each of `bits`
    bits: tuple[int, ...]
    kind: str                                # "accuracy", "embedding" or "proxy"
    description: str
    n_samples: int
    evaluator: Any = None                    # the live evaluator (None when read from the cache)


def tensor_sqnr_drop(x: Any, bits: Sequence[int]) -> list[float]:
    """Relative quantisation noise power E(x - x^)^2 / E x^2 of one real tensor at each bit width."""
    x = x.detach().float()
    power = float((x * x).mean()) or 1e-30
    out = []
    for b in bits:
        if b >= 32:
            out.append(0.0)
            continue
        xq = fake_quantize(x, int(b))
        out.append(float(((x - xq) ** 2).mean()) / power)
    return out


def measure_cut_sensitivity(spec: ModelSpec, names: Sequence[str], bits: Sequence[int]) -> CutSensitivity:
    """ΔAcc(v, b) for the named tensors: measured where the model has real weights and data, else the per-tensor
    SQNR proxy on real activations. Cached per model, tensor list and bit list (MiniLM's table costs a minute)."""
    from core.cache import cache_key, load_npz, save_npz

    bits = tuple(int(b) for b in bits)
    kind = measurement_kind(spec)
    key = cache_key(3, spec.fingerprint(), kind, list(names), list(bits))   # 3: the text no longer names an epsilon
    cached = load_npz("sensitivity", key)
    if cached is not None:
        rows = {n: [float(x) for x in r] for n, r in zip(names, cached["drop"])}
        return CutSensitivity(rows, bits, kind, bytes(cached["desc"]).decode(), int(cached["n_samples"]))
    ev = sensitivity_evaluator(spec)
    have = set(ev.node_names)
    missing = [n for n in names if n not in have]
    if missing:
        raise PlannerError(f"{len(missing)} profiled nodes of {spec.name} (e.g. {missing[0]}) are not in the evaluation graph",
                           "report this: the profiling and evaluation exports disagree")
    if kind in ("accuracy", "embedding"):
        table = ev.table(names, list(bits))
        rows = {n: [float(table.drop[list(table.nodes).index(n), j]) for j in range(len(bits))] for n in names}
        desc = table.description
    else:
        rows = {n: tensor_sqnr_drop(ev.reference_value(n), bits) for n in names}
        desc = (f"per-tensor signal-to-quantisation-noise proxy, NOT an accuracy: E(x - x^)^2 / E x^2 of each cut tensor "
                f"under UAQ, on its real activations in {spec.name} at its real dimensions with seeded random weights "
                f"({ev.n_samples} seeded example inputs)")
    save_npz("sensitivity", key, {"drop": np.array([rows[n] for n in names], dtype=float).reshape(len(names), len(bits)),
                                  "desc": np.frombuffer(desc.encode(), dtype=np.uint8), "n_samples": np.array(ev.n_samples)})
    return CutSensitivity(rows, bits, kind, desc, ev.n_samples, ev)
