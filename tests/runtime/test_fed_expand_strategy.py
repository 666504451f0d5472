"""fed-expand's Flower strategy: each client gets only its blocks; each block is the sample-weighted mean over
the clients that trained it; untouched tensors keep their values exactly."""
from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from runtime.fed.compress_inprocess import _from_client, _received
from runtime.fed.lora_strategy import ARRAYS, CONFIG, METRICS, WEIGHT_KEY, to_numpy, to_record
from runtime.fed_expand.app import BlockFedAvg, layer_of


def _state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {f"model.layers.{i}.{n}": rng.standard_normal((3, 4)).astype(np.float32)
            for i in (2, 5, 8) for n in ("self_attn.o_proj.weight", "mlp.down_proj.weight")}


def test_only_assigned_blocks_are_sent_and_averaged_exactly() -> None:
    rng = np.random.default_rng(0)
    state = _state(rng)
    layers = {1001: "8", 1002: "5,8", 1003: "8"}
    samples = {1001: 10.0, 1002: 30.0, 1003: 60.0}
    nodes = {nid: {"device-id": f"c{nid}", "method": "blocks", "layers": l, "local-steps": 1, "batch-size": 1,
                   "seq-len": 8} for nid, l in layers.items()}
    strat = BlockFedAvg(nodes)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    msgs = list(strat.configure_train(1, to_record(state), ConfigRecord(), grid=None))
    sent = {int(m.metadata.dst_node_id): to_numpy(m.content[ARRAYS]) for m in msgs}
    for nid, arrays in sent.items():                  # only the tensors of the node's own layers
        assert {layer_of(k) for k in arrays} == {int(x) for x in layers[nid].split(",")}
        assert all(np.array_equal(v, state[k]) for k, v in arrays.items())
    replies, trained = [], {}
    for i, m in enumerate(msgs):
        nid = int(m.metadata.dst_node_id)
        TaskIdentity.node_id = nid
        out = {k: v + rng.standard_normal(v.shape).astype(np.float32) for k, v in sent[nid].items()}
        trained[nid] = out
        reply = Message(content=RecordDict({ARRAYS: to_record(out), METRICS: MetricRecord({WEIGHT_KEY: samples[nid]})}),
                        reply_to=_received(m, nid, f"m{i}"))
        replies.append(_from_client(reply, nid, f"m{i}"))
    TaskIdentity.node_id = 0
    new, _ = strat.aggregate_train(1, replies)
    got = to_numpy(new)
    for k in state:
        senders = [nid for nid in trained if k in trained[nid]]
        if not senders:
            assert np.array_equal(got[k], state[k])   # untouched: bit for bit
            continue
        total = sum(samples[s] for s in senders)
        want = sum(trained[s][k] * (samples[s] / total) for s in senders)
        np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-6)
    assert any(layer_of(k) == 2 for k in state) and all(np.array_equal(got[k], state[k]) for k in state if layer_of(k) == 2)


@pytest.mark.parametrize("name,layer", [("model.layers.11.mlp.down_proj.weight", 11),
                                        ("base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight", 3),
                                        ("model.embed_tokens.weight", None)])
def test_layer_of(name: str, layer: int | None) -> None:
    assert layer_of(name) == layer


def test_answer_scores_equal_the_whole_sequence_head() -> None:
    """answer_accuracy runs the head only at answer positions: same exact match and token accuracy as the argmax of
    the whole-sequence logits (the reference), on a tiny random decoder where some answers are all right."""
    import torch
    import transformers

    from runtime.fed_expand.data import answer_accuracy

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=11, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(3):
        ids = torch.randint(0, 11, (5, 9), generator=g)
        mask = torch.zeros(5, 9, dtype=torch.bool)
        for r in range(5):
            mask[r, 9 - 1 - r % 3:] = True                  # answers of 1-3 tokens at the end
        with torch.no_grad():                               # make some rows' answers the model's own argmax
            for r in (0, 3):
                for t in range(1, 9):
                    if mask[r, t]:
                        ids[r, t] = model(input_ids=ids[r: r + 1, :t]).logits[0, -1].argmax()
        batches.append((ids, mask, ()))
    right = tokens = exact = n = 0
    with torch.no_grad():
        for ids, mask, _ in batches:
            pred = model(input_ids=ids).logits[:, :-1].argmax(-1)
            target = mask[:, 1:]
            right += int(((pred == ids[:, 1:]) & target).sum())
            tokens += int(target.sum())
            exact += int(((pred == ids[:, 1:]) | ~target).all(dim=1).sum())
            n += ids.shape[0]
    got = answer_accuracy(model, batches)
    assert exact > 0 and right < tokens                     # the check can tell right from wrong
    assert {k: got[k] for k in ("exact_match", "token_accuracy")} == {"exact_match": exact / n,
                                                                       "token_accuracy": right / tokens}
