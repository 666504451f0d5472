"""Rule 1 of the house: every solver family imports and solves with torch unavailable."""
from __future__ import annotations

import subprocess
import sys

import pytest

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

FAMILIES = {
    "moe-offload": r"""
import solvers.moe_offload.moepic, solvers.moe_offload.baselines, solvers.moe_offload.exact, solvers.moe_offload.validate
from tests.moe_instances import random_problem
p = random_problem(np.random.default_rng(0))
s = solvers.moe_offload.moepic.solve(p)
assert solvers.moe_offload.validate.validate(p, s) == []
""",
    "split-inference": r"""
from solvers.split_inference import baselines, coach, cost, cuts, exact, validate
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
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_solvers_import_and_solve_without_torch(family: str) -> None:
    code = BLOCK_TORCH + FAMILIES[family] + 'assert "torch" not in sys.modules\nprint("ok")\n'
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
