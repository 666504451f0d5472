"""The one shape every planning family has.

A family is one object (a `Family` subclass in `planner/families/<family>.py` or a small package) and
one line in `planner/registry.py`. It declares:

  * who it is: `name`, `method`, `description`, the objective `planner diff` guards;
  * its command-line flags (`plan_flags`, and `emit_flags`/`run_flags` when it has those commands),
    as data with units (`planner.flags.Flag`);
  * when it applies (`claim`) and how to say so when nothing does (`claim_hint`);
  * its typed options from the flags (`options`), checked before any work;
  * its phases (lower, solve, baselines, bound, simulate, lift: each `fn(ctx)` on a `PlanContext`
    whose `state` is the family's own typed record);
  * `validate_plan(plan)`: every constraint checked from the plan JSON alone (run wherever a plan is read);
  * `inspect(plan, wide)`: its tables as rich renderables, and `plot(plan)` (figure) where it has one;
  * `emit(plan, values, staging_dir)` and `run(artifact_dir, values, progress)` where it has them.

The spine (pipeline, CLI, inspect, emit/run commands) loops over or looks up these objects and never
names a family. A family that lacks a capability leaves the method as is; the CLI says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from planner.flags import Flag, FlagValues

if TYPE_CHECKING:  # heavy modules stay out of CLI start-up
    from planner.schema import Plan
    from profilers.hardware import HardwareProfile
    from profilers.model_spec import ModelSpec
    from profilers.moe_structure import MoeStructure

Progress = Callable[[str], None]


@dataclass
class PlanRequest:
    """What the user asked `planner plan` for: the model, the hardware and every flag's typed value."""

    model: str
    hardware: str | None
    scenario: str | None = None
    tiny: bool = False
    record_timing: bool = False
    flags: FlagValues = field(default_factory=FlagValues)


@dataclass
class PlanContext:
    """State passed between phases. `options` and `state` belong to the chosen family (its own types)."""

    request: PlanRequest
    family: "Family"
    spec: "ModelSpec"
    hardware: "HardwareProfile | None"
    scenario_reason: str = ""
    options: Any = None
    state: Any = None
    plan: "Plan | None" = None
    notes: list[str] = field(default_factory=list)
    phase_times_s: dict[str, float] = field(default_factory=dict)
    progress: Progress = lambda text: None
    _structure: Any = None
    _structure_done: bool = False

    def moe_structure(self) -> "MoeStructure | None":
        """The model's MoE structure on the meta device (None for dense models), profiled once."""
        if not self._structure_done:
            self._structure = cached_moe_structure(self.spec, self.request.tiny)
            self._structure_done = True
        return self._structure

    def require_hardware(self, flag: str = "--hardware") -> "HardwareProfile":
        """The device profile, or a one-line error saying this family needs one."""
        from core.errors import PlannerError

        if self.hardware is None:
            raise PlannerError(f"{self.family.name} plans need a device profile",
                               f"pass {flag} NAME (see `planner hardware list`)")
        return self.hardware


@dataclass(frozen=True)
class Phase:
    """One step of a family's plan: a name (shown as progress) and a function of the context."""

    name: str
    run: Callable[[PlanContext], None]


@dataclass
class RunReport:
    """What `planner run` hands back: the receipt as JSON text and the views the CLI prints."""

    receipt_json: str
    views: list[Any]


class Family:
    """Base class of every planning family (see the module docstring)."""

    name: str = ""
    method: str = ""
    description: str = ""
    objective_metric: str = ""
    objective_sense: str = "min"
    plan_flags: tuple[Flag, ...] = ()
    emit_flags: tuple[Flag, ...] = ()
    run_flags: tuple[Flag, ...] = ()
    export_targets: tuple[str, ...] = ()   # `planner export PLAN --to TARGET` (e.g. "llama.cpp")
    claim_hint: str = ""              # e.g. "--cloud HW --link RATE for split inference"
    metric_labels: Mapping[str, str] = {}   # short column headers of the family's metrics in `inspect`

    # -------------------------------------------------------------- planning
    def claim(self, ctx: PlanContext) -> str | None:
        """Why this family applies to the request (flags given, model structure), or None."""
        return None

    def options(self, ctx: PlanContext) -> Any:
        """Typed options from `ctx.request.flags`; raise PlannerError on values that make no sense."""
        return None

    def phases(self) -> Sequence[Phase]:
        """The family's phases, in order; the last one sets `ctx.plan`."""
        raise NotImplementedError

    def validate_plan(self, plan: "Plan") -> list[str]:
        """Constraint violations of a plan, from its JSON alone (empty when valid)."""
        return []

    # -------------------------------------------------------------- inspect
    def inspect(self, plan: "Plan", wide: bool = False) -> list[Any]:
        """The family's own tables (rich renderables); the spine adds header, baselines, bound and notes."""
        return []

    def baseline_metrics(self, plan: "Plan", wide: bool = False) -> tuple[str, ...]:
        """The predicted metrics shown side by side for the plan, every baseline and the bound."""
        return (plan.objective.metric,)

    def plot(self, plan: "Plan") -> Any:
        """A matplotlib Figure of the plan, or None when the family has no plot."""
        return None

    # -------------------------------------------------------------- emit / run / calibrate
    @property
    def can_emit(self) -> bool:
        """Whether `planner emit` supports this family."""
        return type(self).emit is not Family.emit

    @property
    def can_run(self) -> bool:
        """Whether `planner run` supports this family."""
        return type(self).run is not Family.run

    @property
    def can_calibrate(self) -> bool:
        """Whether `planner calibrate` supports this family."""
        return type(self).calibrate is not Family.calibrate

    calibration_clocks: tuple[str, ...] = ("wall",)   # `planner calibrate --clock` values this family takes

    def calibrate(self, spec: "ModelSpec", tiny: bool) -> dict[str, Any]:
        """Measure the model on this machine once; `plan --calibration FILE` then plans from the file."""
        raise NotImplementedError

    def rescale_calibration(self, spec: "ModelSpec", tiny: bool, old: dict[str, Any], old_sha256: str) -> dict[str, Any]:
        """`planner calibrate --rescale OLD`: OLD's figures re-levelled to this host's speed now."""
        from core.errors import PlannerError

        raise PlannerError(f"the {self.name} family cannot rescale a calibration",
                           f"run `planner calibrate MODEL --scenario {self.name} -o FILE` again")

    def export(self, plan: "Plan", target: str) -> tuple[str, str]:
        """The plan as another tool's configuration: (text to write, file suffix), e.g. llama.cpp flags."""
        raise NotImplementedError

    def emit(self, plan: "Plan", values: FlagValues, staging: Path, progress: Progress) -> str:
        """Write the artifact files into `staging` (the spine adds manifest.json and moves it into place);
        returns a one-line summary of what was written."""
        raise NotImplementedError

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        """Execute an emitted artifact (already checksum-verified by the spine) and return its receipt."""
        raise NotImplementedError


STRUCTURE_CACHE_VERSION = 1


def cached_moe_structure(spec: "ModelSpec", tiny: bool) -> "MoeStructure | None":
    """The MoE structure, from the on-disk cache keyed by the model's fingerprint when present (building the model on
    the meta device imports torch and transformers: seconds); None for dense models."""
    import json

    from core.atomic_io import write_bytes_atomic
    from core.cache import cache_dir, cache_key

    from importlib.metadata import version

    key = cache_key("moe_structure", STRUCTURE_CACHE_VERSION, spec.fingerprint(tiny), version("transformers"))
    path = cache_dir() / "moe_structure" / f"{key}.json"
    use_cache = not spec.config_path      # a user's directory can change under the same path: always built
    if use_cache and path.exists():
        try:
            from profilers.moe_structure import structure_from_dict

            d = json.loads(path.read_text())
            return None if d is None else structure_from_dict(d)
        except (OSError, ValueError, TypeError, KeyError):
            pass
    from profilers.graph import profile_model
    from profilers.moe_structure import structure_to_dict

    s = profile_model(spec, tiny=tiny, with_graph=False).moe
    if use_cache:
        write_bytes_atomic(path, json.dumps(None if s is None else structure_to_dict(s)).encode())
    return s


def require_population(ctx: PlanContext, family: str) -> None:
    """A federated plan names its clients (--clients) and takes their hardware from them, not --hardware."""
    from core.errors import PlannerError

    if not ctx.request.flags["clients"]:
        raise PlannerError(f"{family} plans need a client population", "pass --clients FILE or --clients gen:N")
    if ctx.hardware is not None:
        raise PlannerError(f"--hardware does not apply to {family} plans: every client's hardware comes from the "
                           "population", "drop --hardware and name device kinds in the --clients file")
