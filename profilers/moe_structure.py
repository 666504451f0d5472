"""MoE structure of a transformers model, read from its module tree (works on `meta`).

What the moe-offload family needs: which decoder layers are MoE, experts per layer, top-k, parameters
per routed expert, shared experts, everything that is not a routed expert (it must stay resident), and
KV-cache bytes per token. Handles the fused 3-D expert parameters of transformers 5
(`experts.gate_up_proj` (E, 2I, H) with gate rows first; GPT-OSS stores (E, H, 2I) interleaved).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class MoeLayerInfo:
    """One decoder layer. Parameter counts are elements (multiply by dtype bytes for bytes)."""

    index: int
    module_path: str
    is_moe: bool
    routed_expert_params: int
    shared_expert_params: int
    router_params: int
    other_params: int  # attention, norms, dense MLP of non-MoE layers


@dataclass(frozen=True)
class MoeStructure:
    """Model-level MoE facts; `bytes_per_expert` and `non_expert_bytes` are at the profiled dtype."""

    num_layers: int
    moe_layers: tuple[int, ...]
    num_experts: int
    top_k: int
    hidden_size: int
    expert_intermediate_size: int
    params_per_expert: int
    dtype_bytes: int
    num_shared_experts: int
    expert_layout: str  # "gate_up_rows" (gate rows then up rows) or "gate_up_interleaved_transposed"
    non_expert_params: int
    kv_values_per_token: int  # K and V elements cached per token over all layers
    layers: tuple[MoeLayerInfo, ...]
    activation: str
    output_head_params: int = 0  # LM head (read in full every decode step)
    non_expert_param_bytes: int = 0  # exact (some models keep routers in fp32)

    @property
    def bytes_per_expert(self) -> int:
        """Bytes of one routed expert at the profiled dtype."""
        return self.params_per_expert * self.dtype_bytes

    @property
    def non_expert_bytes(self) -> int:
        """Bytes of everything that is not a routed expert (embeddings, attention, shared experts, head)."""
        return self.non_expert_param_bytes or self.non_expert_params * self.dtype_bytes

    @property
    def expert_bytes_total(self) -> int:
        """Bytes of all routed experts over all MoE layers."""
        return self.bytes_per_expert * self.num_experts * len(self.moe_layers)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token at the profiled dtype."""
        return self.kv_values_per_token * self.dtype_bytes


def structure_to_dict(s: MoeStructure) -> dict[str, Any]:
    """A JSON-able record of the structure (the on-disk cache of `planner.families.base`)."""
    return asdict(s)


def structure_from_dict(d: dict[str, Any]) -> MoeStructure:
    """Inverse of `structure_to_dict`."""
    layers = tuple(MoeLayerInfo(**lay) for lay in d["layers"])
    return MoeStructure(**{**d, "layers": layers, "moe_layers": tuple(d["moe_layers"])})


def _nparams(m: nn.Module | None) -> int:
    return 0 if m is None else sum(int(p.numel()) for p in m.parameters())


def _nbytes(m: nn.Module | None) -> int:
    return 0 if m is None else sum(int(p.numel()) * p.element_size() for p in m.parameters())


def _decoder_layers(model: nn.Module) -> tuple[str, Any] | None:
    from torch import nn

    for path in ("model.layers", "transformer.h", "model.decoder.layers", "layers"):
        obj: Any = model
        ok = True
        for part in path.split("."):
            if not hasattr(obj, part):
                ok = False
                break
            obj = getattr(obj, part)
        if ok and isinstance(obj, nn.ModuleList):
            return path, obj
    return None


def _kv_values_per_token(cfg: Any, num_layers: int) -> int:
    """K+V elements per token over all layers, as the transformers cache stores them."""
    heads = int(getattr(cfg, "num_attention_heads", 0) or 0)
    if getattr(cfg, "kv_lora_rank", None):  # MLA (DeepSeek): HF caches decompressed per-head K and V
        k = heads * (int(cfg.qk_nope_head_dim) + int(cfg.qk_rope_head_dim))
        v = heads * int(cfg.v_head_dim)
        return (k + v) * num_layers
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or (int(cfg.hidden_size) // max(heads, 1)))
    return 2 * kv_heads * head_dim * num_layers


def extract_moe_structure(built: Any) -> MoeStructure | None:
    """Return the MoE structure of `built.module`, or None for dense models."""
    from torch import nn

    model: nn.Module = built.module
    cfg = getattr(model, "config", None)
    found = _decoder_layers(model)
    if cfg is None or found is None:
        return None
    path, layers = found
    infos: list[MoeLayerInfo] = []
    num_experts = inter = ppe = shared_count = 0
    layout = "gate_up_rows"
    for i, layer in enumerate(layers):
        mlp = getattr(layer, "mlp", None)
        experts = getattr(mlp, "experts", None) if mlp is not None else None
        gate_up = getattr(experts, "gate_up_proj", None) if experts is not None else None
        total = _nparams(layer)
        if gate_up is None or gate_up.dim() != 3:
            infos.append(MoeLayerInfo(i, f"{path}.{i}", False, 0, 0, 0, total))
            continue
        e = int(gate_up.shape[0])
        hidden = int(cfg.hidden_size)
        if int(gate_up.shape[1]) == hidden and int(gate_up.shape[2]) != hidden:
            layout = "gate_up_interleaved_transposed"  # GPT-OSS: (E, H, 2I), gate/up interleaved
            inter = int(gate_up.shape[2]) // 2
        else:
            inter = int(gate_up.shape[1]) // 2
        routed = _nparams(experts)
        router = _nparams(getattr(mlp, "gate", None) if isinstance(getattr(mlp, "gate", None), nn.Module) else None)
        router += _nparams(getattr(mlp, "router", None))
        shared = _nparams(getattr(mlp, "shared_expert", None)) + _nparams(getattr(mlp, "shared_experts", None))
        shared += _nparams(getattr(mlp, "shared_expert_gate", None))
        num_experts, ppe = e, routed // e
        shared_count = int(getattr(cfg, "n_shared_experts", 0) or (1 if shared else 0))
        infos.append(MoeLayerInfo(i, f"{path}.{i}", True, routed, shared, router, total - routed - shared - router))
    moe_layers = tuple(x.index for x in infos if x.is_moe)
    if not moe_layers:
        return None
    total_params = _nparams(model)
    routed_total = sum(x.routed_expert_params for x in infos)
    routed_bytes = sum(_nbytes(layers[x.index].mlp.experts) for x in infos if x.is_moe)
    dtype_bytes = next(iter(model.parameters())).element_size()
    top_k = int(getattr(cfg, "num_experts_per_tok", None) or getattr(cfg, "experts_per_token", 2))
    act = str(getattr(cfg, "hidden_act", "silu"))
    return MoeStructure(
        num_layers=len(infos),
        moe_layers=moe_layers,
        num_experts=num_experts,
        top_k=top_k,
        hidden_size=int(cfg.hidden_size),
        expert_intermediate_size=inter,
        params_per_expert=ppe,
        dtype_bytes=int(dtype_bytes),
        num_shared_experts=shared_count,
        expert_layout=layout,
        non_expert_params=total_params - routed_total,
        kv_values_per_token=_kv_values_per_token(cfg, len(infos)),
        layers=tuple(infos),
        activation=act,
        non_expert_param_bytes=_nbytes(model) - routed_bytes,
        output_head_params=_nparams(model.get_output_embeddings()) if hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None else 0,
    )
