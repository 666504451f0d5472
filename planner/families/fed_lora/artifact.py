"""fed-lora emit and run entry points.

Artifact layout:
    plan.json                              the plan
    runtime.yaml                           LoRA structure, training settings, the per-client Flower config map
                                           (plan and, up to 1000 clients, every baseline), emulation constants
    adapters/depth-<d>/adapter_config.json PEFT LoraConfig per distinct depth (layers_to_transform from the plan)
    adapters/initial_lora.safetensors      the shared initial adapters (and head) every client starts from
    model/weights.safetensors              base weights (digits-transformer: pretrained centrally; a tiny causal
                                           LM: its seeded weights); SmolLM2 variants load their real weights from
                                           the test bed's cache (`model.loader`) instead
Runnable here: digits-transformer (digits, Dirichlet over classes) and causal LMs with real weights (SmolLM2
variants) or --tiny ones, on the instruction test bed (`--task-data instruct:...`, non-IID by task; the data
split and held-out scoring are fed-expand's). Other models (MiniLM, BERT, full-size GPT-2) get the adapters
and config map only: what real devices would take; `planner run` says so.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from core.errors import ArtifactError, InputMismatchError
from planner.families.base import Progress, RunReport
from planner.flags import FlagValues
from planner.schema import Plan

ARTIFACT_FORMAT = 1
DATA = {"dataset": "sklearn digits", "alpha": 1.0, "seed": 0}   # Dirichlet(1.0): moderately non-IID


def runtime_config(plan: Plan, task: str | None, arch: dict[str, Any] | None, lr: float,
                   model_extra: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The runtime.yaml mapping."""
    from codegen.fed_lora import client_config_map

    devices = plan.inputs["population"]["devices"]
    overhead = float(plan.inputs.get("round_overhead_s", 0.0))

    def clients_of(decisions: dict[str, Any], predicted: dict[str, Any]) -> dict[str, Any]:
        pc = predicted.get("clients", {})
        merged = {}
        for cid, c in decisions.items():
            e = pc.get(cid, {})
            merged[cid] = {**c, "predicted_round_s": e.get("round_time_s", 0.0),
                           "predicted_step_s": e.get("step_time_s", 0.0),
                           "predicted_training_bytes": e.get("training_bytes", 0)}
        out = client_config_map(merged)
        for cid, rec in out.items():
            dv = devices[cid]
            rec.update({"compute-slowdown": float(dv["compute_slowdown"]),
                        "uplink-bytes-per-s": float(dv["uplink_bits_per_s"]) / 8,
                        "downlink-bytes-per-s": float(dv["downlink_bits_per_s"]) / 8, "latency-s": overhead})
        return out

    baselines = {name: {"description": b.description, "clients": clients_of(b.decisions["clients"], dict(b.predicted))}
                 for name, b in sorted(plan.baselines.items()) if "clients" in b.decisions}
    return {
        "format": ARTIFACT_FORMAT, "family": "fed-lora",
        "model": {"name": plan.model.name, "fingerprint": plan.model.fingerprint, "task": task, "arch": arch,
                  "weights": "model/weights.safetensors" if task else None, **(model_extra or {})},
        "lora": dict(plan.decisions["lora"]),
        "adapters": {"initial": "adapters/initial_lora.safetensors", "per_depth": "adapters/depth-<d>/"},
        "training": {"rounds": int(plan.inputs.get("rounds", 20)), "lr": lr, "data": dict(data or DATA),
                     "seq_len": int(plan.inputs.get("seq_len") or 0),
                     "batch_size": int(plan.inputs["batch_size"]), "local_steps": int(plan.inputs["local_steps"])},
        "emulation": {"host_flops_per_cpu_s": plan.inputs["profile"]["host_flops_per_cpu_s"],
                      "note": "device time = this CPU's measured CPU seconds x compute-slowdown (FLOP/s ratio); EMULATED"},
        "predicted": {"round_time_s": plan.predicted["round_time_s"],
                      "progress_rate_per_s": plan.predicted["progress_rate_per_s"]},
        "clients": clients_of(dict(plan.decisions["clients"]), dict(plan.predicted)),
        "baselines": baselines,
    }


def emit(plan: Plan, values: FlagValues, staging: Path, progress: Progress) -> str:
    """Build the model, write adapters, weights (runnable tasks) and the per-client config map."""
    import torch

    from codegen.fed_lora import LoraSpec, emit_adapters
    from planner.registry import plan_model
    from planner.serde import dumps
    from profilers.fine_tuning import task_model
    from profilers.models import build_model

    spec = plan_model(plan)
    seed = int(values["seed"])
    lspec = LoraSpec.from_dict(plan.decisions["lora"])
    task, arch = None, None
    model_extra: dict[str, Any] = {}
    data: dict[str, Any] | None = None
    progress("building the model")
    if spec.name == "digits-transformer":
        from runtime.fed.digits_model import DEFAULTS, pretrained_digits_transformer

        progress("pretraining the digits transformer centrally (cached after the first time)")
        model = pretrained_digits_transformer(seed)
        task, arch = "digits", dict(DEFAULTS)
    else:
        torch.manual_seed(seed)
        built = build_model(spec, tiny=plan.model.tiny, device="cpu", seq_len=int(plan.inputs["seq_len"]))
        model = task_model(built.module, spec.task)
        lm = built.module
        if spec.task == "causal-lm" and (plan.model.tiny or spec.weights) and hasattr(lm, "lm_head") \
                and hasattr(lm, "model"):     # decoder LMs laid out as LlamaForCausalLM (the held-out scorer's)
            from planner.families.fed_expand.data_spec import parse_instruct

            task = "instruct"
            parsed = parse_instruct(str(values["task_data"]), flag="--task-data")
            data = parsed.to_dict()
            hf = built.module.config
            model_extra = {"vocab_size": int(hf.vocab_size), "pad_token_id": int(hf.pad_token_id or 0)}
            if plan.model.tiny:
                model_extra["hf_config"] = json.loads(hf.to_json_string(use_diff=False))
            else:
                model_extra.update(weights=None, loader=spec.weights)
    blocks = model.get_submodule(lspec.blocks_path)
    if len(blocks) != lspec.num_blocks:
        raise InputMismatchError(f"the plan has {lspec.num_blocks} blocks at {lspec.blocks_path}, the model {len(blocks)}",
                                 "emit the plan for the model it was made for")
    depths = [int(c["lora_depth"]) for c in plan.decisions["clients"].values()]
    for b in plan.baselines.values():
        depths += [int(c["lora_depth"]) for c in b.decisions.get("clients", {}).values()]
    progress("writing PEFT adapter configs")
    emit_adapters(model, lspec, depths, staging, seed)
    if task and model_extra.get("weights", "emitted") is not None:
        from safetensors.torch import save_file

        (staging / "model").mkdir(parents=True, exist_ok=True)
        inner = model.model if task == "instruct" else model     # the LM itself; tied tensors saved as copies
        save_file({k: v.detach().clone().contiguous() for k, v in inner.state_dict().items()},
                  str(staging / "model" / "weights.safetensors"))
    cfg = runtime_config(plan, task, arch, lr=float(values["lr"]), model_extra=model_extra, data=data)
    (staging / "runtime.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, width=120), encoding="utf-8")
    (staging / "plan.json").write_text(dumps(plan), encoding="utf-8")
    n = sum(1 for c in plan.decisions["clients"].values() if int(c["lora_depth"]) > 0)
    note = "" if task else ("; no federated dataset for this model here, so `planner run` needs digits-transformer, "
                            "a SmolLM2 variant or a --tiny causal LM")
    return f"runtime.yaml (config map of {n} training clients), adapters/ for depths {sorted(set(d for d in depths if d))}" + note


def run(artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
    """Run the federation (Flower simulation, or --deploy: SuperLink + SuperNodes on loopback) and show the receipt."""
    from runtime.fed.lora_run import run_fed_lora

    check_runnable(artifact)
    mode = "deploy" if values["deploy"] else "simulation"
    progress(f"federated fine-tuning ({mode})")

    def on_round(rec: dict[str, Any]) -> None:
        progress(f"round {rec['round']}: accuracy {rec['accuracy']:.3f}, emulated round {rec.get('emulated_round_s', 0):.3g} s")

    receipt = run_fed_lora(artifact, mode=mode, rounds=values["rounds"], baseline=values["baseline"],
                           on_round=on_round, lr=values["lr_override"])
    receipt["config"] = values["baseline"] or "plan"
    receipt["totals"] = {"final_accuracy": receipt["final_accuracy"], "emulated_clock_s": receipt["emulated_clock_s"],
                         "rounds": len(receipt["rounds"]) - 1, "wall_s": receipt["wall_s"]}
    return RunReport(json.dumps(receipt, indent=2, sort_keys=True, default=float) + "\n", receipt_views(receipt, values.get("wide", False)))


def receipt_views(receipt: dict[str, Any], wide: bool = False) -> list[Any]:
    """Per device: depth trained, predicted vs measured memory and round time (emulated), waiting; accuracy curve."""
    from rich.text import Text

    from planner.tables import table

    out: list[Any] = [Text.from_markup(f"[bold]receipt[/bold]: fed-lora, {receipt['config']}, {receipt['mode']}"),
                      Text(receipt["emulation"], style="dim")]
    t = table("per device: training memory MiB predicted/measured (weights, LoRA, grads, optimizer state, saved "
              "activations: the plan's 'peak' less its workspace allowance), round s predicted/emulated")
    for c in ("device", "d", "ok", "train P", "train M", "T P", "T E", "wait"):
        if c == "device":   # ids are never cut
            t.add_column(c, justify="left", overflow="fold")
        else:
            t.add_column(c, justify="right", no_wrap=True)
    devs = receipt["devices"]
    rows = list(devs.items())
    shown = rows if wide or len(rows) <= 40 else rows[:40]
    for cid, e in shown:
        if e.get("sits_out"):
            t.add_row(cid, "out", "-", "-", "-", "-", "-", "-")
            continue

        def mib(x: Any) -> str:
            return "-" if x is None else f"{x / 2**20:.1f}"

        def sec(x: Any) -> str:
            return "-" if x is None else f"{x:.3g}"

        t.add_row(cid, str(e["lora_depth"]), "yes" if e.get("trained_planned_depth") else "NO",
                  mib(e.get("predicted_memory_bytes")), mib(e.get("measured_memory_bytes")),
                  sec(e.get("predicted_round_s")), sec(e.get("emulated_round_s")), sec(e.get("wait_s")))
    out.append(t)
    if len(shown) < len(rows):
        out.append(Text(f"... {len(rows) - len(shown)} more devices (--wide)"))
    curve = receipt["rounds"]
    if curve:
        pts = ", ".join(f"r{r['round']} {r['accuracy']:.3f}@{r['emulated_clock_s']:.3g}s" for r in curve[:: max(1, len(curve) // 8)])
        out.append(Text(f"held-out accuracy @ emulated clock: {pts}"))
        out.append(Text(f"final accuracy {receipt['final_accuracy']:.3f} after {len(curve) - 1} rounds, emulated "
                        f"{receipt['emulated_clock_s']:.4g} s (wall {receipt['wall_s']:.1f} s)"))
    bad = [c for c, e in devs.items() if not e.get("sits_out") and not e.get("trained_planned_depth", False)]
    if bad:
        out.append(Text(f"clients that did not train their planned depth: {', '.join(bad[:10])}", style="red"))
    return out


def check_runnable(artifact: Path) -> None:
    """Fail early with the reason when an artifact cannot run here."""
    from runtime.fed.lora_model import load_artifact

    art = load_artifact(artifact)
    if not art.config["model"].get("task"):
        raise ArtifactError(f"model {art.config['model']['name']} has no federated dataset here",
                            "plan digits-transformer, a SmolLM2 variant (e.g. smollm2-135m:4L) or a --tiny causal LM "
                            "to run the federation")
