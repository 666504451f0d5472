"""The Flower simulation in a process of its own, so that a launcher can stop it within seconds.

`flwr.simulation.run_simulation` runs the ServerApp in a thread and the clients on Ray actors; an
interrupt in the caller's thread leaves both running until the run ends (minutes). The launcher
(`runtime/fed/federation.py`) therefore starts this module as a child process in its own process
group, tails the rounds file it writes, and on Ctrl-C stops the group (SIGTERM, then SIGKILL).

    python -m runtime.fed.simulation_process SPEC.json

SPEC holds `module` (defines `APPS`, a `FlowerApps`), `run_config`, `node_configs`, `cpus`, `verbose`
and `error_path`: a failure is written there as one JSON line {"problem", "fix"} for the launcher.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def quiet_flower(verbose: bool) -> None:
    """Flower's logger prints every line twice (its own coloured handler and the root's) with DEBUG lines:
    keep one plain copy at INFO, which goes where this process's stderr goes (the run's log file)."""
    flwr_log = logging.getLogger("flwr")
    for h in list(flwr_log.handlers):
        flwr_log.removeHandler(h)
    flwr_log.propagate = True
    flwr_log.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str]) -> int:
    """Run the simulation described by the spec file `argv[0]`; exit 0 on success, 1 with the error file."""
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    signal.signal(signal.SIGTERM, _on_term)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from core.errors import PlannerError
    from runtime.fed.federation import run_simulation_here

    quiet_flower(bool(spec.get("verbose", False)))
    apps = importlib.import_module(spec["module"]).APPS
    try:
        run_simulation_here(apps, spec["run_config"], spec["node_configs"], int(spec["cpus"]),
                            bool(spec.get("verbose", False)))
    except PlannerError as exc:
        Path(spec["error_path"]).write_text(json.dumps({"problem": exc.problem, "fix": exc.fix}) + "\n", encoding="utf-8")
        logging.getLogger(__name__).exception("the simulation failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
