"""Serving requests from three domains (the spec-serve family's `mix:code,chat,math:N` workload).

  code  write a short Python function for a sentence taken from a stdlib docstring (testbeds/corpus.py)
  chat  instruction-following requests (testbeds/instruct.py: reverse, upper, sort, recall, format, arith)
  math  arithmetic word problems with 1-3 steps, answered with their working (testbeds/arithmetic.py)
Each prompt's `task` is its domain; deterministic for a seed.
"""
from __future__ import annotations

import random

from core.errors import PlannerError, closest_names
from testbeds.prompts import Prompt

DOMAINS = ("code", "chat", "math")
NEW_TOKENS = 32          # tokens generated per request unless the caller asks otherwise


def _code(r: random.Random, i: int, seed: int) -> Prompt:
    from testbeds.corpus import SOURCES, source_texts

    src = sorted(SOURCES)[r.randrange(len(SOURCES))]
    docs = source_texts(src)
    doc = docs[r.randrange(len(docs))] if docs else "Return the sum of a list of numbers."
    sentence = doc.split(". ")[0].strip().rstrip(".")[:160]
    return Prompt(f"code-{seed}-{i}", "code", f"Write a short Python function that does this: {sentence}.",
                  (), "contains_all", "", NEW_TOKENS, "mix", {"source": src})


def _chat(r: random.Random, i: int, seed: int) -> Prompt:
    from testbeds import instruct

    task = ("reverse", "upper", "sort", "recall", "format", "arith")[r.randrange(6)]
    e = instruct.examples(task, 1, "test", seed * 100_003 + i)[0]
    return Prompt(f"chat-{seed}-{i}", "chat", e.prompt, (e.answer,), "contains_all", "", NEW_TOKENS, "mix",
                  {"instruct_task": task})


def _math(r: random.Random, i: int, seed: int) -> Prompt:
    from testbeds.arithmetic import problem

    text, value = problem(r, 1 + r.randrange(3))
    return Prompt(f"math-{seed}-{i}", "math", text + " Show your working.", (str(value),), "number", "",
                  NEW_TOKENS, "mix")


_MAKERS = {"code": _code, "chat": _chat, "math": _math}


def generate(domain: str, count: int, seed: int = 0) -> list[Prompt]:
    """`count` requests of `domain`."""
    if domain not in _MAKERS:
        raise PlannerError(f"unknown domain '{domain}'", closest_names(domain, DOMAINS) + f"; the domains are {', '.join(DOMAINS)}")
    return [_MAKERS[domain](random.Random(f"mix:{domain}:{seed}:{i}"), i, seed) for i in range(count)]
