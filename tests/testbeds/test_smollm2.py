"""SmolLM2-135M test bed: real weights where behaviour depends on them, a fake builder for the cache logic."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.errors import ArtifactError, PlannerError, UnknownNameError
from testbeds import smollm2
from testbeds.block_expansion import expand_blocks

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- real weights
def test_greedy_answer_on_a_fixed_prompt(smollm2_model, smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt")["input_ids"]
    out = smollm2_model.generate(ids, max_new_tokens=10, do_sample=False)
    assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip() == "The capital of France is Paris."


def test_catalog_entry_has_the_real_dimensions(smollm2_model) -> None:
    from planner.registry import resolve_model

    spec = resolve_model("smollm2-135m")
    real = smollm2_model.config
    for key, value in spec.config.items():
        if key == "rope_parameters":
            assert real.rope_parameters["rope_theta"] == value["rope_theta"]
        else:
            assert getattr(real, key) == pytest.approx(value), key
    assert sum(p.numel() for p in smollm2_model.parameters()) == 134_515_008


def test_truncated_variant_keeps_the_first_layers_norm_and_head(smollm2_model) -> None:
    small = smollm2.load_model("smollm2-135m:4L")
    assert len(small.model.layers) == 4 and small.config.num_hidden_layers == 4
    full = smollm2_model.state_dict()
    for key, value in small.state_dict().items():
        assert torch.equal(value, full[key]), key
    assert small.lm_head.weight.data_ptr() == small.model.embed_tokens.weight.data_ptr()   # still tied
    # the truncated model computes what the full model's first 4 blocks + final norm + head compute
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    with torch.no_grad():
        hidden = smollm2_model(ids, output_hidden_states=True).hidden_states[4]
        expect = smollm2_model.lm_head(smollm2_model.model.norm(hidden))
        got = small(ids).logits
    assert torch.allclose(got, expect, atol=1e-5)


def test_llama_pro_expansion_leaves_the_logits_unchanged(smollm2_model) -> None:
    big, inserted = expand_blocks(smollm2_model, after=[0, 14, 29])
    assert inserted == [1, 16, 32] and len(big.model.layers) == 33 == big.config.num_hidden_layers
    assert [b.self_attn.layer_idx for b in big.model.layers] == list(range(33))
    assert len(smollm2_model.model.layers) == 30                      # the base model is untouched
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314, 8130, 30]])
    with torch.no_grad():
        base = smollm2_model(ids).logits
        out = big(ids).logits
        # with a KV cache too (layer_idx renumbering matters there)
        gen_base = smollm2_model.generate(ids, max_new_tokens=4, do_sample=False)
        gen_big = big.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, base)
    assert torch.equal(gen_big, gen_base)


def test_catalog_build_on_cpu_loads_the_real_weights(smollm2_cache) -> None:
    from planner.registry import resolve_model
    from profilers.models import build_model

    spec = resolve_model("smollm2-135m:2L")
    built = build_model(spec, device="cpu")
    ref = smollm2.load_model("smollm2-135m:2L")
    assert len(built.module.model.layers) == 2
    assert torch.equal(built.module.model.layers[1].mlp.down_proj.weight, ref.model.layers[1].mlp.down_proj.weight)


# ---------------------------------------------------------------- names
def test_variant_names() -> None:
    from planner.registry import resolve_model
    from profilers.models import build_model

    assert smollm2.parse_variant("smollm2-135m") == 30 and smollm2.parse_variant("smollm2-135m:8L") == 8
    for bad in ("smollm2-135m:0L", "smollm2-135m:31L"):
        with pytest.raises(PlannerError, match="1 <= N <= 30"):
            smollm2.parse_variant(bad)
        with pytest.raises(PlannerError, match="1 <= N <= 30"):
            resolve_model(bad)
    with pytest.raises(UnknownNameError):
        smollm2.parse_variant("smollm3:8L")
    spec = resolve_model("smollm2-135m:8L")
    assert spec.config["num_hidden_layers"] == 8 and spec.fingerprint() != resolve_model("smollm2-135m").fingerprint()
    tiny = build_model(spec, tiny=True)          # tiny random model: no GGUF, no cache
    assert tiny.module.config.hidden_size == 64 and tiny.module.config.num_key_value_heads == 2


# ---------------------------------------------------------------- the GGUF and the cache
def test_truncated_gguf_is_refused(tmp_path: Path) -> None:
    cut = tmp_path / smollm2.GGUF_FILE
    with open(smollm2.gguf_path(), "rb") as fh:
        cut.write_bytes(fh.read(1 << 20))
    with pytest.raises(ArtifactError, match="truncated") as err:
        smollm2.check_gguf(cut)
    assert "--force-reinstall" in err.value.one_line() and "\n" not in err.value.one_line()


def _fake_build(staging: Path) -> None:
    """Stands in for the minute-long GGUF dequantisation: a small weights file and a true manifest."""
    (staging / smollm2.WEIGHTS_FILE).write_bytes(bytes(range(256)) * 64)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": smollm2._sha256(p)} for p in staging.iterdir()}
    (staging / smollm2.MANIFEST_FILE).write_text(json.dumps({"format": smollm2.CACHE_FORMAT, "files": files}))
    with open(staging.parent / "builds.log", "a") as fh:
        fh.write(f"{os.getpid()}\n")


def test_missing_truncated_and_corrupt_caches_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm2, "_build", _fake_build)
    folder = smollm2.ensure_cached(tmp_path)
    assert smollm2.cache_is_valid(folder)
    weights = folder / smollm2.WEIGHTS_FILE
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])                       # truncated
    assert not smollm2.cache_is_valid(folder)
    assert smollm2.ensure_cached(tmp_path) == folder and smollm2.cache_is_valid(folder)
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF                                                 # same size, one flipped byte
    weights.write_bytes(bytes(data))
    assert not smollm2.cache_is_valid(folder)
    smollm2.ensure_cached(tmp_path)
    assert weights.read_bytes() == good
    (folder / smollm2.MANIFEST_FILE).unlink()                         # half-deleted
    smollm2.ensure_cached(tmp_path)
    builds = (folder.parent / "builds.log").read_text().split()
    assert len(builds) == 4
    assert not list(folder.parent.glob(".*.tmp"))                     # no staging or trash left behind


def test_two_processes_building_at_once_build_once(tmp_path: Path) -> None:
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]); from pathlib import Path\n"
        "from testbeds import smollm2\n"
        "exec(sys.argv[3])\n"
        "def slow(staging):\n    time.sleep(1.0); _fake_build(staging)\n"
        "smollm2._build = slow\nprint(smollm2.ensure_cached(Path(sys.argv[1])))\n"
    )
    fake = "import json, os\n" + inspect.getsource(_fake_build)   # no torch, no pytest in the children
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(ROOT), fake], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and smollm2.cache_is_valid(Path(outs[0]))
    builds = list((tmp_path / "smollm2").glob("builds.log"))
    assert len(builds[0].read_text().split()) == 1                   # the second process waited and reused it


def test_forgetting_probe_on_the_base_model(smollm2_model, smollm2_tokenizer) -> None:
    """The probe's questions are ones the base model answers (4 of them here, greedy) and its held-out text
    loss is that of a pretrained model (a random-init model sits near ln(49152) = 10.8 nats)."""
    from testbeds import probe

    out = probe.run_probe(smollm2_model, smollm2_tokenizer, max_docs=2, max_questions=4)
    assert out["answer_accuracy"] == 1.0
    assert 1.0 < out["text_loss_nats"] < 4.0
