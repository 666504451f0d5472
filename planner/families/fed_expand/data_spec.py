"""`--data` of fed-expand: which instruction tasks, how many examples and how non-IID, parsed and split.

    instruct:4tasks                         the first 4 instruction tasks (arith, reverse, upper, sort)
    instruct:sort+format+recall             named tasks
    instruct:4tasks,total=800,alpha=0.3     with testbeds.specs' instruct keys (total, alpha, size_alpha, seed,
                                            test_per_task); `clients` must match the population if given

The split is testbeds.instruct.client_split (non-IID by task and size, seeded): its task histogram per client
is the client's data signature and its size the client's sample count.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.errors import PlannerError, UnknownNameError, closest_names
from testbeds.instruct import TASKS
from testbeds.specs import DATA_SETS

FORMS = "instruct:Ntasks or instruct:TASK+TASK[,key=value...] (e.g. instruct:4tasks, instruct:sort+format,total=800)"
_COUNT = re.compile(r"^(\d+)tasks$")


@dataclass(frozen=True)
class InstructData:
    """A parsed fed-expand `--data`."""

    text: str
    tasks: tuple[str, ...]
    total: int = 2000
    alpha: float = 0.5
    size_alpha: float = 1.0
    seed: int = 0
    test_per_task: int = 50
    clients: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain record for plans and artifacts."""
        return {"text": self.text, "tasks": list(self.tasks), "total": self.total, "alpha": self.alpha,
                "size_alpha": self.size_alpha, "seed": self.seed, "test_per_task": self.test_per_task}


def parse_instruct(text: str, flag: str = "--data") -> InstructData:
    """Parse (see the module docstring); bad input raises PlannerError naming the part at fault."""
    text = text.strip()
    name, _, rest = text.partition(":")
    if name != "instruct":
        raise UnknownNameError(f"{flag}: fed-expand trains on instruction data, not '{name}'", f"write {FORMS}")
    items = [s.strip() for s in rest.split(",") if s.strip()]
    if not items or "=" in items[0]:
        raise PlannerError(f"{flag} '{text}' names no tasks", f"write {FORMS}")
    head, keys = items[0], items[1:]
    m = _COUNT.match(head)
    if m:
        k = int(m.group(1))
        if not 1 <= k <= len(TASKS):
            raise PlannerError(f"{flag} '{text}' asks for {k} tasks; there are {len(TASKS)}",
                               f"use instruct:Ntasks with 1 <= N <= {len(TASKS)}")
        tasks = TASKS[:k]
    else:
        tasks = tuple(t.strip() for t in head.split("+"))
        for t in tasks:
            if t not in TASKS:
                raise UnknownNameError(f"{flag}: unknown instruction task '{t}'",
                                       closest_names(t, TASKS) + f"; the tasks are {', '.join(TASKS)}")
        if len(set(tasks)) != len(tasks):
            raise PlannerError(f"{flag} '{text}' names a task twice", "name each task once")
    known = DATA_SETS["instruct"]
    args: dict[str, Any] = {}
    for item in keys:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in known:
            raise PlannerError(f"{flag} '{text}': '{item}' is not one of {', '.join(known)}=VALUE", f"write {FORMS}")
        try:
            args[key] = known[key][0](value.strip())
        except ValueError:
            raise PlannerError(f"{flag} '{text}': {key}={value} is not a {known[key][0].__name__}",
                               f"pass a {known[key][0].__name__} for {key}") from None
    if args.get("total", 1) < 1 or args.get("alpha", 1) <= 0 or args.get("size_alpha", 1) <= 0 \
            or args.get("test_per_task", 1) < 1:
        raise PlannerError(f"{flag} '{text}': total and test_per_task must be >= 1, alpha and size_alpha > 0",
                           "pass positive values")
    return InstructData(text=text, tasks=tuple(tasks), clients=args.pop("clients", None), **args)


def client_data(data: InstructData, clients: int) -> list[list[Any]]:
    """Training examples per client (testbeds.instruct.client_split), `clients` shares."""
    from testbeds.instruct import client_split

    if data.clients is not None and data.clients != clients:
        raise PlannerError(f"--data says clients={data.clients} but the population has {clients} clients",
                           "drop clients= from --data (the population sets it)")
    return client_split(clients, data.total, data.alpha, data.size_alpha, data.seed, data.tasks)
