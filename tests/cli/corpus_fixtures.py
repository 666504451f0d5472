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
    # geo-train regions files
    two = [{"name": "a", "hardware": "cpu_server_xeon", "step_time": "40ms"},
           {"name": "b", "hardware": "cpu_server_xeon", "step_time": "40ms"}]
    (base / "regions.yaml").write_text(yaml.safe_dump({"regions": two, "wan": {"rate": "1gbps", "rtt": "20ms"}}))
    (base / "regions_slow.yaml").write_text(yaml.safe_dump({"regions": two, "wan": {"rate": "10kbps", "rtt": "20ms"}}))
    (base / "regions_nounit.yaml").write_text(yaml.safe_dump({"regions": two, "wan": {"rate": 1000, "rtt": "20ms"}}))
    (base / "regions_nowan.yaml").write_text(yaml.safe_dump({"regions": two}))
    import numpy as np

    from profilers.moe import RoutingTrace

    RoutingTrace(np.zeros((40, 2, 2), dtype=np.int16), np.full((40, 2, 2), -1, dtype=np.int16), 8, "test: 2 layers",
                 "other-model", {}).save(base / "wrong_shape.npz")
    return base


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
