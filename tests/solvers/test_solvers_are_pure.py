"""Rule 1 of the house: every solver family imports and solves with torch unavailable.

The families come from the registry; each names its solver package after itself (moe-offload ->
solvers/moe_offload) and ships a small random instance in tests/<family>_instances.py or here.
"""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

from planner.registry import families

BLOCK_TORCH = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name.startswith("transformers"):
            raise ImportError("torch is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
import numpy as np
"""

# a small solve per family (families without one here only have their solver package imported)
SOLVES = {
    "fed-expand": r"""
from tests.fed_expand_instances import random_problem
from solvers.fed_expand import baselines, exact, greedy
from solvers.fed_expand.cost import evaluate
p = random_problem(3, n=5, P=3)
g = greedy.solve(p)
assert not evaluate(p, g.assign).uncovered
assert abs(exact.CpSat().solve(p).objective - g.objective) < 1e-9
assert baselines.fixed_expansion(p).assign.all()
""",
    "moe-offload": r"""
from solvers.moe_offload import moepic, validate
from tests.moe_instances import random_problem
p = random_problem(np.random.default_rng(0))
s = moepic.solve(p)
assert validate.validate(p, s) == []
""",
    "split-inference": r"""
from solvers.split_inference import coach, validate
from tests.split_instances import make_problem, sp_edges
rng = np.random.default_rng(0)
p = make_problem(9, sp_edges(rng, 9), rng)
s = coach.solve(p)
assert validate.validate(p, s) == []
""",
    "fed-compress": r"""
from solvers.fed_compress import baselines, caesar, cost, exact, problem, validate
from tests.fed_compress_instances import random_problem
p = random_problem(np.random.default_rng(0), n=12, rounds=3)
s = caesar.solve(p)
assert validate.validate(p, s) == []
assert all(validate.validate(p, b.solve(p)) == [] for b in baselines.baselines(reference=s))
""",
    "fed-graph": r"""
import numpy as np
from solvers.fed_graph import gcf
from solvers.fed_graph.problem import ClientData, FedGraphProblem
rng = np.random.default_rng(0)
data = []
for i in range(4):
    y = rng.integers(0, 2, size=12)
    sp = np.arange(12) % 3
    data.append(ClientData(rng.normal(size=(12, 3)) + y[:, None], y, sp == 0, sp == 1, sp == 2))
p = FedGraphProblem(client_ids=("a", "b", "c", "d"), structure=rng.random((4, 3)), features=rng.random((4, 2)),
                    train_nodes=np.full(4, 4), model_bytes=40, signature_bytes=20, rounds=2, classes=2, k=2,
                    threshold=None, pilot=tuple(data))
s = gcf.solve(p)
assert s.chosen in s.configs and s.bytes_round == 320
""",
    "dfgl": r"""
from solvers.dfgl import baselines, ddpg, duplex, exact, validate
from tests.dfgl_instances import small_problem
p = small_problem(4, 3)
s = duplex.solve(p, ddpg.DdpgConfig(episodes=2))
assert validate.validate(p, s.schedule) == []
assert all(validate.validate(p, b.solve(p).schedule) == [] for b in baselines.baselines())
assert exact.one_round_oracle(p, 0, 0.0, ddpg.ratio_grid(p, 4))[0] > 0
""",
}


def solver_modules(name: str) -> list[str]:
    """Every module of solvers/<family>/."""
    pkg = importlib.import_module("solvers." + name.replace("-", "_"))
    return [pkg.__name__] + [f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]


@pytest.mark.parametrize("family", sorted(f.name for f in families()))
def test_solvers_import_and_solve_without_torch(family: str) -> None:
    imports = "".join(f"import {m}\n" for m in solver_modules(family))
    code = BLOCK_TORCH + imports + SOLVES.get(family, "") + 'assert "torch" not in sys.modules\nprint("ok")\n'
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
