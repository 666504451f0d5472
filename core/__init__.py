"""Leaf modules every layer may import (profilers, solvers, codegen, runtime, planner).

`errors` (user-facing errors: problem + fix on one line), `atomic_io` (atomic writes with the user's
umask), `output_paths` (what a command may overwrite), `cache` (the on-disk cache directory).
Standard library only: importing `core` never pulls torch, numpy or the solver stack.
"""
