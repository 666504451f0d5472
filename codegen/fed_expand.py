"""fed-expand codegen: the plan's block expansion applied to the model, checked to compute what the base model
computes, and the per-client Flower config maps of the plan and its baselines.

`expand_for_plan(base, decisions)` inserts the identity blocks after the plan's `added_after` base blocks
(testbeds/block_expansion.py: LLaMA-Pro copies with zeroed o_proj and down_proj) and checks the indices it
got against the plan's `added_layers`. `identity_gap(base, expanded, vocab)` is the max |Δ| of the logits on
a fixed input: the semantic-equivalence check of this rewrite (≤ 1e-6 in fp32 is required at emit).
"""
from __future__ import annotations

from typing import Any, Mapping

from core.errors import InputMismatchError

IDENTITY_TOLERANCE = 1e-6


def expand_for_plan(base: Any, decisions: Mapping[str, Any]) -> Any:
    """The expanded model of the plan (fp32, eval); InputMismatchError if the model does not fit the plan."""
    from testbeds.block_expansion import expand_blocks

    L = len(base.model.layers)
    if L != int(decisions["num_base_blocks"]):
        raise InputMismatchError(f"the plan expands {decisions['num_base_blocks']} blocks, the model has {L}",
                                 "emit the plan for the model it was made for")
    big, inserted = expand_blocks(base, after=list(decisions["added_after"]))
    if list(inserted) != list(decisions["added_layers"]):
        raise InputMismatchError(f"expansion put the blocks at {inserted}, the plan at {decisions['added_layers']}",
                                 "re-plan with this version of the planner")
    return big.eval()


def identity_gap(base: Any, expanded: Any, vocab: int, seq: int = 24, seed: int = 0) -> float:
    """max |logits(expanded) − logits(base)| on a seeded random input (fp32)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, seq), generator=g)
    with torch.no_grad():
        return float((expanded(input_ids=ids).logits - base(input_ids=ids).logits).abs().max())


def client_layers(decisions: Mapping[str, Any]) -> dict[str, list[int]]:
    """{client id: expanded layer indices it trains} from a plan's (or baseline's) client decisions."""
    return {cid: [int(x) for x in c["layers"]] for cid, c in decisions.items()}
