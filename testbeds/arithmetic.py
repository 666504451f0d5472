"""Short arithmetic word problems with a numeric answer: the short-context contrast to retrieval.

Difficulty grows with the number of steps (1-3 additions/subtractions/multiplications on small numbers).
Scorer `number`: the first number of the answer (after the prefix "The answer is") must equal the result.
"""
from __future__ import annotations

import random

from core.errors import PlannerError, closest_names
from testbeds.prompts import Prompt

TASKS = ("word1", "word2", "word3")      # word problems with 1, 2 or 3 steps
NAMES = ("Tom", "Ann", "Maria", "Ravi", "Lena", "Omar", "Yuki", "Sam", "Ines", "Paul")
ITEMS = ("apples", "marbles", "stamps", "coins", "books", "pencils", "shells", "cards", "eggs", "stickers")


def problem(rng: random.Random, steps: int) -> tuple[str, int]:
    """One word problem with `steps` operations and its integer answer (never negative)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    total = rng.randint(3, 30)
    text = [f"{name} has {total} {item}."]
    for _ in range(steps):
        op = rng.choice(("add", "sub", "mul") if total <= 12 else ("add", "sub"))
        if op == "add":
            k = rng.randint(2, 20)
            text.append(rng.choice((f"{name} buys {k} more {item}.", f"A friend gives {name} {k} {item}.")))
            total += k
        elif op == "sub" and total > 2:
            k = rng.randint(1, total - 1)
            text.append(rng.choice((f"{name} gives away {k} {item}.", f"{name} loses {k} {item}.")))
            total -= k
        else:
            k = rng.randint(2, 4)
            text.append(f"Then the number of {item} {name} has becomes {k} times as large.")
            total *= k
    text.append(f"How many {item} does {name} have now?")
    return " ".join(text), total


def generate(task: str, count: int, seed: int = 0, start: int = 0) -> list[Prompt]:
    """`count` problems of `task` (word1/word2/word3)."""
    if task not in TASKS:
        raise PlannerError(f"unknown arithmetic task '{task}'", closest_names(task, TASKS) + f"; the tasks are {', '.join(TASKS)}")
    steps = int(task[-1])
    out = []
    for i in range(start, start + count):
        text, value = problem(random.Random(f"arith:{task}:{seed}:{i}"), steps)
        out.append(Prompt(f"arith-{task}-{seed}-{i}", task, text, (str(value),), "number", "The answer is", 8,
                          "arith", {"steps": steps}))
    return out
