"""How commands name a test bed: one grammar for prompt workloads, data sets and graphs.

  --workload SUITE:TASK[,TASK...][@LENGTH]:COUNT   generated prompts, e.g. `ruler:niah,kv,vt@2k:32` = 32 prompts
                                                   of about 2048 tokens, round-robin over three RULER tasks
             PATH.jsonl                            a user's own prompts (testbeds/prompts.py for the fields)
  --data NAME[:KEY=VALUE,...]                      e.g. `instruct:clients=10,alpha=0.3`, `corpus:clients=12`
  --graph NAME[:KEY=VALUE,...]                     e.g. `csbm:nodes=2000,homophily=0.8,snr=1.0,clients=10`,
                                                   `csbm-clients:groups=3,clients=30`, `karate`

Suites: ruler (niah, niah_mk, niah_mv, kv, vt, cwe; a LENGTH is required), arith (word1, word2, word3),
instruct (arith, reverse, upper, sort, recall, format; held-out examples), probe (qa), mix (code, chat,
math: serving requests by domain, testbeds/domains.py). `all` names every
task of a suite. LENGTH is tokens, `k` = 1024 (`2k` = 2048). Bad input raises PlannerError (exit 2).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from core.errors import PlannerError, UnknownNameError, closest_names
from testbeds.prompts import Prompt, chat_ids, read_jsonl

SUITES: dict[str, tuple[str, ...]] = {
    "ruler": ("niah", "niah_mk", "niah_mv", "kv", "vt", "cwe"),
    "arith": ("word1", "word2", "word3"),
    "instruct": ("arith", "reverse", "upper", "sort", "recall", "format"),
    "probe": ("qa",),
    "mix": ("code", "chat", "math"),
}
WORKLOAD_FORMS = "SUITE:TASK[,TASK...][@LENGTH]:COUNT (e.g. ruler:niah,kv,vt@2k:32) or a .jsonl prompt file"
_WORKLOAD = re.compile(r"^(?P<suite>[a-z_]+):(?P<tasks>[a-z0-9_]+(?:,[a-z0-9_]+)*)(?:@(?P<length>\d+(?:\.\d+)?k?))?:(?P<count>\d+)$")


@dataclass(frozen=True)
class WorkloadSpec:
    """A parsed `--workload`: generated (suite, tasks, length, count) or a user's JSONL file (`path`)."""

    text: str
    suite: str = ""
    tasks: tuple[str, ...] = ()
    length_tokens: int = 0
    count: int = 0
    path: str = ""


def parse_length(text: str, flag: str = "--workload") -> int:
    """Tokens from `512`, `2k`, `1.5k` (k = 1024)."""
    try:
        value = float(text[:-1]) * 1024 if text.endswith("k") else float(text)
    except ValueError:
        raise PlannerError(f"{flag}: length '{text}' is not a number of tokens", "write e.g. 512 or 2k") from None
    if value != int(value) or value <= 0:
        raise PlannerError(f"{flag}: length '{text}' is not a positive whole number of tokens", "write e.g. 512 or 2k")
    return int(value)


def parse_workload(text: str, flag: str = "--workload") -> WorkloadSpec:
    """Parse a workload spec (checked against the known suites and tasks; nothing is generated yet)."""
    text = text.strip()
    if text.endswith(".jsonl") or "/" in text:
        if not Path(text).is_file():
            raise PlannerError(f"{flag} {text}: the prompt file does not exist", "check the path (one JSON object per line)")
        return WorkloadSpec(text=text, path=text)
    m = _WORKLOAD.match(text)
    if not m:
        raise PlannerError(f"{flag} '{text}' is not a workload", f"write {WORKLOAD_FORMS}")
    suite = m.group("suite")
    if suite not in SUITES:
        raise UnknownNameError(f"{flag}: unknown suite '{suite}'", closest_names(suite, SUITES) + f"; the suites are {', '.join(SUITES)}")
    tasks = tuple(m.group("tasks").split(","))
    tasks = SUITES[suite] if tasks == ("all",) else tasks
    for t in tasks:
        if t not in SUITES[suite]:
            raise UnknownNameError(f"{flag}: unknown {suite} task '{t}'",
                                   closest_names(t, SUITES[suite]) + f"; the {suite} tasks are {', '.join(SUITES[suite])}")
    if len(set(tasks)) != len(tasks):
        raise PlannerError(f"{flag} '{text}' names a task twice", "name each task once")
    length = parse_length(m.group("length"), flag) if m.group("length") else 0
    if suite == "ruler" and not length:
        raise PlannerError(f"{flag} '{text}' has no length", "RULER prompts need one, e.g. ruler:niah@2k:32")
    if suite != "ruler" and length:
        raise PlannerError(f"{flag} '{text}': {suite} prompts are short and take no @LENGTH", f"drop it, e.g. {suite}:{tasks[0]}:32")
    count = int(m.group("count"))
    if count < 1:
        raise PlannerError(f"{flag} '{text}' asks for 0 prompts", "ask for at least 1")
    return WorkloadSpec(text=text, suite=suite, tasks=tasks, length_tokens=length, count=count)


def build_workload(spec: WorkloadSpec | str, tokenizer: Any = None, seed: int = 0, max_context: int = 8192,
                   flag: str = "--workload") -> list[Prompt]:
    """The prompts of a workload; every prompt plus its answer must fit `max_context` tokens (checked).

    `tokenizer` defaults to SmolLM2's (the test-bed model; needs its cache, built on first use)."""
    if isinstance(spec, str):
        spec = parse_workload(spec, flag)
    if spec.length_tokens and spec.length_tokens + 64 > max_context:
        raise PlannerError(f"{flag} '{spec.text}': {spec.length_tokens}-token prompts do not fit the model's "
                           f"{max_context}-token context with room for the answer",
                           f"use a length of at most {max_context - 64} tokens (e.g. @4k)")
    if tokenizer is None and (spec.path or spec.suite == "ruler"):
        from testbeds.smollm2 import load_tokenizer

        tokenizer = load_tokenizer()
    if spec.path:
        prompts = read_jsonl(spec.path, flag)
        for i, p in enumerate(prompts):
            n = len(chat_ids(tokenizer, p)) + p.max_new_tokens
            if n > max_context:
                raise PlannerError(f"{flag} {spec.path}: prompt {i + 1} ({p.id}) needs {n} tokens with its answer, "
                                   f"beyond the model's {max_context}-token context", "shorten it or lower max_new_tokens")
        return prompts
    per_task = [spec.count // len(spec.tasks) + (1 if j < spec.count % len(spec.tasks) else 0) for j in range(len(spec.tasks))]
    groups = [_generate(spec.suite, t, n, spec.length_tokens, tokenizer, seed) for t, n in zip(spec.tasks, per_task)]
    # round-robin over tasks, so any prefix of the workload mixes them
    out: list[Prompt] = []
    for i in range(max(per_task)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _generate(suite: str, task: str, count: int, length: int, tokenizer: Any, seed: int) -> list[Prompt]:
    if count == 0:
        return []
    if suite == "ruler":
        from testbeds import ruler

        return ruler.generate(task, length, count, tokenizer, seed)
    if suite == "arith":
        from testbeds import arithmetic

        return arithmetic.generate(task, count, seed)
    if suite == "mix":
        from testbeds import domains

        return domains.generate(task, count, seed)
    if suite == "instruct":
        from testbeds import instruct

        return [e.as_prompt(f"instruct-{task}-{seed}-{i}") for i, e in enumerate(instruct.examples(task, count, "test", seed))]
    from testbeds import probe

    qs = probe.questions()
    return [qs[i % len(qs)] for i in range(count)]


# ---------------------------------------------------------------- NAME:KEY=VALUE,...
@dataclass(frozen=True)
class NamedSpec:
    """A parsed `--data` / `--graph`: the name and its typed arguments (defaults filled in)."""

    text: str
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


# name -> {key: (type, default)}; graphs are declared by testbeds.graphs
DATA_SETS: dict[str, dict[str, tuple[Callable[[str], Any], Any]]] = {
    "instruct": {"clients": (int, 10), "total": (int, 2000), "alpha": (float, 0.5), "size_alpha": (float, 1.0),
                 "seed": (int, 0), "test_per_task": (int, 50)},
    "corpus": {"clients": (int, 12), "seq_len": (int, 128), "seed": (int, 0)},
}


def parse_named(text: str, catalog: Mapping[str, Mapping[str, tuple[Callable[[str], Any], Any]]], flag: str) -> NamedSpec:
    """Parse `NAME[:KEY=VALUE,...]` against `catalog`; unknown names/keys and bad values raise PlannerError."""
    text = text.strip()
    name, _, rest = text.partition(":")
    if name not in catalog:
        raise UnknownNameError(f"{flag}: unknown name '{name}'", closest_names(name, catalog) + f"; known: {', '.join(sorted(catalog))}")
    known = catalog[name]
    args = {k: default for k, (_, default) in known.items()}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not value.strip():
            raise PlannerError(f"{flag} '{text}': '{item}' is not KEY=VALUE", f"write e.g. {name}:{next(iter(known), 'key')}=...")
        if key not in known:
            raise PlannerError(f"{flag} '{text}': {name} takes no '{key}'", f"its keys are {', '.join(known) or 'none'}")
        kind = known[key][0]
        try:
            args[key] = kind(value.strip())
        except ValueError:
            raise PlannerError(f"{flag} '{text}': {key}={value} is not a {kind.__name__}", f"pass a {kind.__name__} for {key}") from None
    return NamedSpec(text=text, name=name, args=args)


def parse_data(text: str, flag: str = "--data") -> NamedSpec:
    """Parse a `--data` spec (instruct, corpus)."""
    return parse_named(text, DATA_SETS, flag)


def parse_graph(text: str, flag: str = "--graph") -> NamedSpec:
    """Parse a `--graph` spec (see testbeds.graphs.GRAPHS)."""
    from testbeds.graphs import GRAPHS

    return parse_named(text, GRAPHS, flag)
