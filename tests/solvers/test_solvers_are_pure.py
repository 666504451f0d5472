"""Rule 1 of the house: solvers import and run with torch unavailable."""
from __future__ import annotations

import subprocess
import sys

CODE = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name.startswith("transformers"):
            raise ImportError("torch is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
import numpy as np
import solvers.moe_offload.moepic, solvers.moe_offload.baselines, solvers.moe_offload.exact, solvers.moe_offload.validate
from tests.moe_instances import random_problem
p = random_problem(np.random.default_rng(0))
s = solvers.moe_offload.moepic.solve(p)
assert solvers.moe_offload.validate.validate(p, s) == []
assert "torch" not in sys.modules
print("ok")
"""


def test_solvers_import_and_solve_without_torch() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
