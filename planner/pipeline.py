"""The planning pipeline: resolve -> scenario -> options -> the family's phases -> validate.

The spine names no family: it resolves the model and hardware, asks the registry's families which one
applies (or takes `--scenario`), lets that family turn the flags into its typed options (before any
heavy work), runs the family's phases in order, and checks the lifted plan with the family's own
validator. `plan()` returns the context; `ctx.plan` is the result.
"""
from __future__ import annotations

import dataclasses
import logging
import time

from core.errors import PlannerError
from planner.families.base import Family, PlanContext, PlanRequest, Progress
from planner.flags import for_family
from planner.registry import families, family as family_named, resolve_hardware, resolve_model
from planner.schema import Plan

log = logging.getLogger(__name__)


def choose_family(ctx: PlanContext) -> tuple[Family, str]:
    """The family: forced by --scenario, else the first in registry order that claims the request."""
    req = ctx.request
    if req.scenario:
        return family_named(req.scenario), "forced by --scenario"
    for fam in families():
        ctx.family = fam
        reason = fam.claim(ctx)
        if reason:
            return fam, reason
    hints = "; ".join(f.claim_hint for f in families() if f.claim_hint)
    raise PlannerError(f"no scenario applies to the dense model {ctx.spec.name}"
                       + (f" on {ctx.hardware.name}" if ctx.hardware else "") + " alone",
                       f"pass {hints}, or --scenario NAME")


def check_foreign_flags(fam: Family, given: frozenset[str], command_flags: dict[str, tuple[str, ...]]) -> None:
    """A flag of another family is an error, not silently ignored (e.g. --rtt on an MoE offloading plan)."""
    own = {f.name for f in fam.plan_flags}
    for name in sorted(given):
        owners = command_flags.get(name)
        if owners is not None and name not in own:
            raise PlannerError(f"{name} is a {'/'.join(owners)} flag, but this plan is {fam.name}",
                               f"drop {name}, or pass --scenario {owners[0]}")


def plan(request: PlanRequest, on_phase: Progress | None = None,
         family_flags: dict[str, tuple[str, ...]] | None = None) -> PlanContext:
    """Run the whole pipeline for `request`; `on_phase` receives a short progress text per step.

    `family_flags` maps every family-owned flag name to its owners (for the foreign-flag check)."""
    say = on_phase or (lambda text: None)
    t0 = time.perf_counter()
    say("resolving the model and hardware")
    spec = resolve_model(request.model)
    hw = resolve_hardware(request.hardware) if request.hardware else None
    ctx = PlanContext(request, family=None, spec=spec, hardware=hw, progress=say)  # type: ignore[arg-type]
    say("choosing the scenario")
    fam, reason = choose_family(ctx)
    ctx.family, ctx.scenario_reason = fam, reason
    if family_flags is not None:
        check_foreign_flags(fam, request.flags.given, family_flags)
    ctx.request = dataclasses.replace(request, flags=for_family(request.flags, fam.plan_flags))
    ctx.options = fam.options(ctx)
    ctx.phase_times_s["resolve"] = time.perf_counter() - t0
    phases = list(fam.phases())
    for i, phase in enumerate(phases, 1):
        say(f"{fam.name} phase {i}/{len(phases)}: {phase.name}")
        t = time.perf_counter()
        phase.run(ctx)
        ctx.phase_times_s[phase.name] = ctx.phase_times_s.get(phase.name, 0.0) + time.perf_counter() - t
    if ctx.plan is None:
        raise RuntimeError(f"family {fam.name} produced no plan (a bug)")
    bad = plan_validator(ctx.plan)   # the family's constraints and every metric's range: a plan no command
    if bad:                          # would read back is never written
        raise RuntimeError("lifted plan violates its constraints (a bug): " + "; ".join(bad))
    return ctx


def plan_validator(plan_obj: Plan) -> list[str]:
    """The plan's violations: its numbers' ranges and objective (`planner.plan_numbers`, every family), then its
    own family's constraints (unknown family: one message)."""
    from planner.plan_numbers import check_numbers

    bad = check_numbers(plan_obj)
    try:
        fam = family_named(plan_obj.family)
    except PlannerError:
        return bad + [f"unknown family '{plan_obj.family}'"]
    try:
        return bad + fam.validate_plan(plan_obj)
    except KeyError as exc:
        return bad + [f"plan decisions lack the field {exc.args[0]!r}" if exc.args else "plan decisions lack a field"]
    except (TypeError, ValueError, AttributeError, IndexError):
        return bad + ["plan decisions have a value of the wrong type or shape"]


def require_valid(plan_obj: Plan, source: str) -> Plan:
    """Refuse to act on a plan that breaks its own constraints (every command that reads a plan calls this)."""
    from core.errors import PlanFormatError

    bad = plan_validator(plan_obj)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise PlanFormatError(f"{source} violates its constraints: {bad[0]}{more}",
                              "regenerate it with `planner plan`; `planner diff` lists every violation")
    return plan_obj

