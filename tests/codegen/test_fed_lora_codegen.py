"""fed-lora codegen equivalence (docs/fed-lora.md, "Runtime"): per-device PEFT models follow their plan exactly."""
from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from codegen.fed_lora import DeviceDecision, LoraSpec, build_device_model, client_config_map
from kernels.lora_state import lora_state
from kernels.saved_activations import SavedTensorLedger, parameter_storages
from profilers.fine_tuning import block_layout, task_model
from runtime.fed.digits_model import DigitsTransformer


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=128, n_positions=32, n_embd=32, n_layer=4, n_head=2, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    return {"digits": DigitsTransformer(hidden=32, layers=4, heads=2, intermediate=64),
            "gpt2": task_model(gpt2, "causal-lm")}


def _spec(model: nn.Module) -> LoraSpec:
    lay = block_layout(model)
    return LoraSpec(blocks_path=lay.path, layers_pattern=lay.pattern, num_blocks=lay.num_blocks,
                    target_modules=lay.target_modules, head_modules=lay.head_modules, rank=4, alpha=8)


def _outputs(model: nn.Module, batch: dict) -> torch.Tensor:
    if "images" in batch:
        return model(batch["images"])
    return model.model(input_ids=batch["input_ids"], use_cache=False).logits


DECISIONS = [DeviceDecision(1), DeviceDecision(2, (2,)), DeviceDecision(3, (1, 2)), DeviceDecision(4, (0, 1, 2, 3))]


@pytest.mark.parametrize("name", ["digits", "gpt2"])
def test_outputs_equal_the_base_model_at_initialisation(name: str) -> None:
    base = _models()[name].eval()
    spec = _spec(base)
    batch = base.fine_tuning_batch(3, 12, seed=1)
    with torch.no_grad():
        ref = _outputs(base, batch)
    for dec in DECISIONS:
        dev = build_device_model(base, spec, dec)
        dev.module.eval()
        with torch.no_grad():
            out = _outputs(dev.module, batch)
        assert torch.equal(out, ref), dec
        # the base model itself was not touched
        assert not any("lora_" in n for n, _ in base.named_parameters())


@pytest.mark.parametrize("name", ["digits", "gpt2"])
def test_gradients_and_saved_tensors_exactly_where_the_plan_says(name: str) -> None:
    base = _models()[name].eval()
    spec = _spec(base)
    L = spec.num_blocks
    batch = base.fine_tuning_batch(3, 12, seed=2)
    for dec in DECISIONS:
        ledger = SavedTensorLedger()
        dev = build_device_model(base, spec, dec, ledger=ledger)
        inner = dev.module
        ledger.skip = parameter_storages(inner)
        blocks = inner.get_submodule(spec.blocks_path)
        plain, packed = [0] * L, [0] * L
        marks: dict[int, tuple[int, int]] = {}
        hooks = []

        def enter(i: int) -> None:
            marks[i] = (len(ledger.plain), len(ledger.packed))

        def leave(i: int) -> None:
            plain[i] = len(ledger.plain) - marks[i][0]
            packed[i] = len(ledger.packed) - marks[i][1]

        for i, blk in enumerate(blocks):
            hooks.append(blk.register_forward_pre_hook(lambda m, a, i=i: enter(i)))
            hooks.append(blk.register_forward_hook(lambda m, a, o, i=i: leave(i)))
        with ledger.counting():
            loss = inner.fine_tuning_loss(batch)
        loss.backward()
        for h in hooks:
            h.remove()
        lo = L - dec.lora_depth
        for i in range(L):
            grads = [p.grad is not None for n, p in blocks[i].named_parameters() if "lora_" in n]
            if i >= lo:
                assert grads and all(grads), (dec, i)
                assert plain[i] + packed[i] > 0, (dec, i)
            else:
                # frozen blocks: no adapters, nothing saved for backward, nothing differentiated
                assert grads == [] and plain[i] == 0 and packed[i] == 0, (dec, i, plain[i], packed[i])
            assert (packed[i] > 0) == (i in dec.act_quant_blocks), (dec, i, packed[i])
        for n, p in inner.named_parameters():
            if "lora_" not in n and not any(h in n for h in spec.head_modules):
                assert p.grad is None and not p.requires_grad, n


@pytest.mark.parametrize("bits, floor", [(8, 0.99), (4, 0.95)])
def test_quantised_activations_keep_lora_gradients_close(bits: int, floor: float) -> None:
    base = _models()["digits"].eval()
    spec = _spec(base)
    batch = base.fine_tuning_batch(16, 16, seed=3)
    # Non-zero B so that both A and B receive gradients.
    torch.manual_seed(5)
    start = {k: torch.randn_like(v) * 0.05 for k, v in
             lora_state(build_device_model(base, spec, DeviceDecision(4)).module).items()}

    def grads(dec: DeviceDecision) -> torch.Tensor:
        dev = build_device_model(base, spec, dec, adapter_state=start)
        dev.module.fine_tuning_loss(batch).backward()
        return torch.cat([p.grad.reshape(-1) for n, p in dev.module.named_parameters() if "lora_" in n])

    g0 = grads(DeviceDecision(4))
    gq = grads(DeviceDecision(4, (0, 1, 2, 3), act_bits=bits))
    cos = float(nn.functional.cosine_similarity(g0, gq, dim=0))
    assert cos >= floor, cos


def test_client_config_map_is_one_scalar_record_per_client() -> None:
    m = client_config_map({"b": {"lora_depth": 3, "act_quant_layers": [5, 6], "act_bits": 8, "local_steps": 20,
                                 "batch_size": 16},
                           "a": {"lora_depth": 0, "act_quant_layers": [], "act_bits": 8}})
    assert list(m) == ["a", "b"]
    assert m["b"]["act-quant-blocks"] == "5,6" and m["a"]["lora-depth"] == 0
    for rec in m.values():
        assert all(isinstance(v, (int, float, str)) for v in rec.values())
    assert m["a"] is not m["b"]
