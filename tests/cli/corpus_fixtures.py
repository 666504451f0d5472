"""Files the bad-input corpus and the output tests run against: valid and broken plans, traces, configs,
hardware profiles, an artifact and a tampered copy, a user's directory and file. Built once per session
in a temporary folder; the corpus then checks that no case changes any of it."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
SMALL_MOE = {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "vocab_size": 512, "hidden_size": 64,
             "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
             "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 4096}


def _json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def build(base: Path, tiny_plan: Path, artifact: Path) -> Path:
    """Populate `base` with every input the corpus names (`tiny_plan`, `artifact`: made by the caller)."""
    base.mkdir(parents=True, exist_ok=True)
    moe = json.loads((GOLDEN / "mixtral-8x7b.a100_24gb.json").read_text())
    split = json.loads((GOLDEN / "digits-cnn.raspberry_pi5_8gb.1mbps.json").read_text())
    _json(base / "moe.json", moe)
    _json(base / "split.json", split)
    shutil.copy(tiny_plan, base / "tiny.json")
    # broken plans
    bad = json.loads(json.dumps(moe))
    bad["decisions"]["layers"][0]["split_ratio"] = 1.7
    _json(base / "ratio17.json", bad)
    bad = json.loads(json.dumps(moe))
    bad["decisions"]["layers"][0]["budget_bytes"] = -5
    _json(base / "negbudget.json", bad)
    bad = json.loads(json.dumps(moe))
    bad["decisions"]["layers"][0]["cached_experts"] = -2
    _json(base / "negslots.json", bad)
    bad = json.loads(json.dumps(moe))
    bad["objective"]["value"] = "fast"
    _json(base / "strobj.json", bad)
    bad = json.loads(json.dumps(moe))
    bad["schema_version"] = 99
    _json(base / "v99.json", bad)
    bad = json.loads(json.dumps(moe))
    del bad["model"]
    _json(base / "nomodel.json", bad)
    bad = json.loads(json.dumps(moe))
    bad["family"] = "nosuch-family"
    _json(base / "nofamily.json", bad)
    # numbers nobody checked before: the objective and every metric's range
    bad = json.loads(json.dumps(moe))
    bad["objective"]["value"] = -1
    _json(base / "negobj.json", bad)
    bad = json.loads(json.dumps(moe))
    bad["objective"]["value"] = moe["objective"]["value"] * 2
    _json(base / "mismatch.json", bad)
    bad = json.loads(json.dumps(moe))
    bad["predicted"]["hit_rate"] = 1.5
    _json(base / "hit15.json", bad)
    bad = json.loads(json.dumps(moe))
    bad["baselines"][sorted(bad["baselines"])[0]]["predicted"]["tpot_ms"] = -3.0
    _json(base / "negbase.json", bad)
    bad = json.loads(json.dumps(moe))
    del bad["decisions"]["layers"][0]["budget_bytes"]
    _json(base / "nokey.json", bad)
    (base / "truncated.json").write_text(json.dumps(moe)[:500], encoding="utf-8")
    _json(base / "array.json", [1, 2])
    # traces
    (base / "trunc.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    (base / "text.npz").write_text("not a trace\n", encoding="utf-8")
    with zipfile.ZipFile(base / "other.npz", "w") as z:
        z.writestr("something.npy", b"\x93NUMPY")
    # model configs
    _json(base / "small_moe.json", SMALL_MOE)
    _json(base / "zero_experts.json", {**SMALL_MOE, "num_local_experts": 0})
    _json(base / "unknown_type.json", {**SMALL_MOE, "model_type": "no_such_arch"})
    _json(base / "nonnumeric.json", {**SMALL_MOE, "hidden_size": "big"})
    _json(base / "topk0.json", {**SMALL_MOE, "num_experts_per_tok": 0})
    _json(base / "topk9.json", {**SMALL_MOE, "num_experts_per_tok": 9})
    _json(base / "no_type.json", {k: v for k, v in SMALL_MOE.items() if k != "model_type"})
    (base / "notjson.json").write_text("{ model_type: mixtral", encoding="utf-8")
    # hardware profiles
    pi = yaml.safe_load((ROOT / "planner/catalog/hardware/raspberry_pi5_8gb.yaml").read_text())
    (base / "eff15.yaml").write_text(yaml.safe_dump({**pi, "efficiency_compute": 1.5}), encoding="utf-8")
    (base / "extra_field.yaml").write_text(yaml.safe_dump({**pi, "speed": "fast"}), encoding="utf-8")
    (base / "neg_memory.yaml").write_text(yaml.safe_dump({**pi, "memory_bytes": -1}), encoding="utf-8")
    (base / "list.yaml").write_text("- 1\n- 2\n", encoding="utf-8")
    # what `planner hardware measure` writes on a machine without CUDA: a CPU with no host link
    (base / "measured_cpu.yaml").write_text(yaml.safe_dump({
        "name": "measured_cpu", "kind": "cpu", "description": "x86_64 CPU, 2 threads (measured)",
        "memory_bytes": 24 * 2**30, "memory_bandwidth_bytes_per_s": 8e9, "peak_flops_per_s": {"fp32": 5e10},
        "source": "measured by `planner hardware measure`", "unified_memory": True, "efficiency_compute": 1.0,
        "efficiency_memory": 1.0, "measured": True, "host_expert_efficiency": 0.74}), encoding="utf-8")
    # client populations
    (base / "huge_pop.yaml").write_text("devices:\n  - {kind: raspberry_pi5_8gb, count: 1000000000}\n", encoding="utf-8")
    # calibration files
    (base / "cal_split.yaml").write_text(
        "# written by `planner calibrate`; pass it to `planner plan --calibration FILE`\n"
        + yaml.safe_dump({"kind": "planner-calibration", "format": 1, "family": "split-inference",
                          "model": {"name": "x", "fingerprint": "sha256:0", "tiny": False}, "measured": {}}),
        encoding="utf-8")
    # artifacts
    shutil.copytree(artifact, base / "art")
    shutil.copytree(artifact, base / "tampered")
    with open(base / "tampered" / "runtime.yaml", "a", encoding="utf-8") as fh:
        fh.write("# edited\n")
    shutil.copytree(artifact, base / "nomanifest")
    (base / "nomanifest" / "manifest.json").unlink()
    # a user's things
    (base / "d").mkdir()
    (base / "d" / "notes.txt").write_text("my notes\n", encoding="utf-8")
    (base / "f").write_text("a user's file\n", encoding="utf-8")
    (base / "prompts_empty.txt").write_text("\n\n", encoding="utf-8")
    (base / "user.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"a user's picture")
    (base / "emptymix").mkdir()                     # a local directory named like a model, with no config.json
    _user_figures(base)
    # geo-train regions files
    two = [{"name": "a", "hardware": "cpu_server_xeon", "step_time": "40ms"},
           {"name": "b", "hardware": "cpu_server_xeon", "step_time": "40ms"}]
    (base / "regions.yaml").write_text(yaml.safe_dump({"regions": two, "wan": {"rate": "1gbps", "rtt": "20ms"}}))
    (base / "regions_slow.yaml").write_text(yaml.safe_dump({"regions": two, "wan": {"rate": "10kbps", "rtt": "20ms"}}))
    (base / "regions_nounit.yaml").write_text(yaml.safe_dump({"regions": two, "wan": {"rate": 1000, "rtt": "20ms"}}))
    (base / "regions_nowan.yaml").write_text(yaml.safe_dump({"regions": two}))
    jit = [{**two[0], "step_jitter": "-5ms"}, two[1]]
    (base / "regions_badjitter.yaml").write_text(yaml.safe_dump({"regions": jit, "wan": {"rate": "1gbps", "rtt": "20ms"}}))
    import numpy as np

    from profilers.moe import RoutingTrace

    RoutingTrace(np.zeros((40, 2, 2), dtype=np.int16), np.full((40, 2, 2), -1, dtype=np.int16), 8, "test: 2 layers",
                 "other-model", {}).save(base / "wrong_shape.npz")
    # dfgl workers files: a link rate with no unit; links that leave a worker unreachable
    three = [{"id": f"w{i}", "hardware": "raspberry_pi5_8gb"} for i in range(3)]
    (base / "workers_nounit.yaml").write_text(yaml.safe_dump(
        {"workers": three, "links": {"rate": "20mbps", "latency": "5ms", "pairs": [["w0", "w1", "20", "5ms"]]}}),
        encoding="utf-8")
    (base / "workers_cut.yaml").write_text(yaml.safe_dump(
        {"workers": three, "links": {"rate": "0mbps", "latency": "5ms", "pairs": [["w0", "w1", "20mbps", "5ms"]]}}),
        encoding="utf-8")
    # spec-serve nodes files: valid, no verifier, unknown hardware, a link rate with no unit, an unreachable node
    hub = {"name": "hub", "hardware": "jetson_agx_orin_32gb", "role": "verifier"}
    edge = {"name": "edge1", "hardware": "jetson_orin_nano_8gb", "role": "drafter"}
    link = {"between": ["hub", "edge1"], "rate": "1gbps", "delay": "1ms"}
    (base / "spec_nodes.yaml").write_text(yaml.safe_dump({"nodes": [hub, edge], "links": [link]}), encoding="utf-8")
    (base / "spec_nover.yaml").write_text(yaml.safe_dump({"nodes": [{**hub, "role": "drafter"}, edge], "links": [link]}),
                                          encoding="utf-8")
    (base / "spec_badhw.yaml").write_text(yaml.safe_dump(
        {"nodes": [hub, {**edge, "hardware": "jetson_orin_nan_8gb"}], "links": [link]}), encoding="utf-8")
    (base / "spec_nounit.yaml").write_text(yaml.safe_dump({"nodes": [hub, edge], "links": [{**link, "rate": 1000}]}),
                                           encoding="utf-8")
    (base / "spec_cut.yaml").write_text(yaml.safe_dump({"nodes": [hub, edge, {**edge, "name": "edge2"}],
                                                        "links": [link]}), encoding="utf-8")
    # fed-expand: one client too small to hold the expanded model with one trainable block
    (base / "fe_small.yaml").write_text(yaml.safe_dump({"devices": [
        {"id": "big", "kind": "jetson_orin_nano_8gb", "memory": "2GiB"},
        {"id": "tiny-phone", "kind": "phone_midrange_8gb", "memory": "64KiB"}]}), encoding="utf-8")
    return base


def _user_figures(base: Path) -> None:
    """holiday.png/.pdf/.svg: a user's own matplotlib figures (default metadata names matplotlib, not planner)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    for fmt in ("png", "pdf", "svg"):
        fig.savefig(base / f"holiday.{fmt}", format=fmt)
    plt.close(fig)


def snapshot(base: Path) -> dict[str, tuple[str, int]]:
    """Every path under `base` with its content hash (or 'dir') and mode: what the corpus must not change."""
    out = {}
    for p in sorted(base.rglob("*")):
        st = p.lstat()
        kind = "dir" if stat.S_ISDIR(st.st_mode) else hashlib.sha256(p.read_bytes()).hexdigest() \
            if stat.S_ISREG(st.st_mode) else "special"
        out[str(p.relative_to(base))] = (kind, stat.S_IMODE(st.st_mode))
    return out


def long_name(base: Path) -> str:
    """An output path whose file name is 250 characters (temporary names must not overflow NAME_MAX)."""
    return str(base / ("p" * 245 + ".json"))


def umask() -> int:
    """The process umask."""
    m = os.umask(0o022)
    os.umask(m)
    return m
