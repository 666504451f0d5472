"""Instruction data for fine-tuning: several task types, held-out test sets, a non-IID split across clients.

Task types (prompt -> answer, scored `exact` on the first line):
  arith     "Compute 23 + 58." -> "81"
  reverse   "Reverse the letters of the word 'planet'." -> "tenalp"
  upper     "Write 'quiet river' in upper case." -> "QUIET RIVER"
  sort      "Sort these numbers in ascending order: 5, 2, 9." -> "2, 5, 9"
  recall    "Table: red=17; blue=42; green=8. What is the value of blue?" -> "42"
  format    "Convert to JSON: name=Ann, age=31" -> '{"name": "Ann", "age": 31}'

Train and test are disjoint by construction: an example belongs to the test split when a hash of its prompt
falls in one bucket of eight (so no test prompt can ever be drawn for training, whatever the seeds).
`client_split` is non-IID by task and by size: client c draws its task mixture from Dirichlet(alpha) over the
task types and its share of the examples from Dirichlet(size_alpha) over clients (both seeded).
"""
from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from core.errors import PlannerError, closest_names
from testbeds.filler import ADJ, NOUN, WORDS
from testbeds.prompts import Prompt

TASKS = ("arith", "reverse", "upper", "sort", "recall", "format")
COLORS = ("red", "blue", "green", "black", "white", "pink", "gray", "gold", "brown", "cyan")
NAMES = ("Ann", "Tom", "Lena", "Omar", "Yuki", "Ravi", "Ines", "Paul", "Maria", "Sam")


@dataclass(frozen=True)
class Example:
    """One instruction and its answer."""

    task: str
    prompt: str
    answer: str

    def as_prompt(self, pid: str) -> Prompt:
        """The example as a scored chat prompt (for evaluation)."""
        return Prompt(pid, self.task, self.prompt, (self.answer,), "exact", "", 24, "instruct")


def _arith(r: random.Random) -> tuple[str, str]:
    a, b = r.randint(10, 99), r.randint(10, 99)
    op = r.choice("+-")
    return f"Compute {a} {op} {b}.", str(a + b if op == "+" else a - b)


SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "de", "fu", "ga", "ho", "ji", "be", "zo", "wa",
             "ny", "qu", "ve", "xi")


def _reverse(r: random.Random) -> tuple[str, str]:
    w = "".join(r.choice(SYLLABLES) for _ in range(r.randint(2, 3)))
    return f"Reverse the letters of the word '{w}'.", w[::-1]


def _upper(r: random.Random) -> tuple[str, str]:
    s = f"{r.choice(ADJ)} {r.choice(WORDS)} {r.choice(NOUN)}"
    return f"Write '{s}' in upper case.", s.upper()


def _sort(r: random.Random) -> tuple[str, str]:
    xs = r.sample(range(1, 100), r.randint(3, 6))
    return f"Sort these numbers in ascending order: {', '.join(map(str, xs))}.", ", ".join(map(str, sorted(xs)))


def _recall(r: random.Random) -> tuple[str, str]:
    keys = r.sample(COLORS, r.randint(3, 5))
    vals = [r.randint(1, 99) for _ in keys]
    ask = r.randrange(len(keys))
    table = "; ".join(f"{k}={v}" for k, v in zip(keys, vals))
    return f"Table: {table}. What is the value of {keys[ask]}?", str(vals[ask])


def _format(r: random.Random) -> tuple[str, str]:
    name, age, city = r.choice(NAMES), r.randint(18, 80), r.choice(NOUN)
    return f"Convert to JSON: name={name}, age={age}, city={city}", json.dumps({"name": name, "age": age, "city": city})


_MAKERS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "arith": _arith, "reverse": _reverse, "upper": _upper, "sort": _sort, "recall": _recall, "format": _format}


def _check(tasks: Sequence[str]) -> None:
    for t in tasks:
        if t not in TASKS:
            raise PlannerError(f"unknown instruction task '{t}'", closest_names(t, TASKS) + f"; the tasks are {', '.join(TASKS)}")


def in_test_split(prompt: str) -> bool:
    """True for the eighth of all prompts that belong to the held-out split (a hash of the prompt text)."""
    return zlib.crc32(prompt.encode("utf-8")) % 8 == 0


def examples(task: str, count: int, split: str = "train", seed: int = 0) -> list[Example]:
    """`count` examples of `task` from the `train` or `test` split (disjoint by construction)."""
    _check([task])
    if split not in ("train", "test"):
        raise PlannerError(f"unknown split '{split}'", "use train or test")
    make, want = _MAKERS[task], split == "test"
    out: list[Example] = []
    for i in range(200 * count + 1000):
        e = Example(task, *make(random.Random(f"instruct:{task}:{split}:{seed}:{i}")))
        if in_test_split(e.prompt) == want:
            out.append(e)
            if len(out) == count:
                return out
    raise PlannerError(f"task {task} could not draw {count} {split} examples", "ask for fewer examples")


def client_split(clients: int, total: int, alpha: float = 0.5, size_alpha: float = 1.0, seed: int = 0,
                 tasks: Sequence[str] = TASKS, min_size: int = 4) -> list[list[Example]]:
    """Training examples per client, non-IID by task (Dirichlet `alpha`) and size (Dirichlet `size_alpha`)."""
    _check(tasks)
    if clients < 1 or total < clients * min_size:
        raise PlannerError(f"{total} examples cannot give {clients} clients {min_size} each",
                           f"raise the total to at least {max(1, clients) * min_size}")
    if alpha <= 0 or size_alpha <= 0:
        raise PlannerError("Dirichlet concentrations must be positive", "pass e.g. alpha=0.5")
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet([size_alpha] * clients)
    sizes = np.maximum(min_size, np.floor(shares * (total - clients * min_size)).astype(int) + min_size)
    mix = rng.dirichlet([alpha] * len(tasks), size=clients)
    counts = [np.bincount(rng.choice(len(tasks), size=int(n), p=m), minlength=len(tasks)) for n, m in zip(sizes, mix)]
    need = np.sum(counts, axis=0)
    pools = {t: examples(t, int(need[j]), "train", seed) if need[j] else [] for j, t in enumerate(tasks)}
    used = {t: 0 for t in tasks}
    out: list[list[Example]] = []
    for c in range(clients):
        mine: list[Example] = []
        for j, t in enumerate(tasks):
            k = int(counts[c][j])
            mine.extend(pools[t][used[t]: used[t] + k])
            used[t] += k
        random.Random(f"instruct-order:{seed}:{c}").shuffle(mine)
        out.append(mine)
    return out


def held_out(per_task: int, seed: int = 0, tasks: Sequence[str] = TASKS) -> list[Example]:
    """Held-out examples, `per_task` of each task type."""
    _check(tasks)
    return [e for t in tasks for e in examples(t, per_task, "test", seed)]
