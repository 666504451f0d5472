"""A model's tensors as llama.cpp stores them in a GGUF file: names, shapes, types and bytes.

Built from a transformers config (a plain mapping, e.g. `config.to_dict()`), without weights, the way
llama.cpp's converter and quantizer would lay the model out:

  * names follow llama.cpp's GGUF tensor names (gguf-py/gguf/constants.py: TENSOR_NAMES and the
    per-architecture MODEL_TENSORS lists); the converter (convert_hf_to_gguf.py) merges the routed
    experts of a layer into one 3-D tensor per projection (`blk.N.ffn_{gate,up,down}_exps.weight`,
    ne = [n_embd, n_ff_exp, n_expert] for gate/up and [n_ff_exp, n_embd, n_expert] for down) and, for
    DeepSeek's MLA, splits `kv_b_proj` into `attn_k_b` and `attn_v_b`;
  * shapes are in ggml order: ne[0] is the row length (the input dimension of a projection);
  * types follow llama.cpp's quantizer for the file type the user names (`llama_tensor_get_type` in
    src/llama-quant.cpp): the default type of the file type, then its per-tensor rules (output.weight
    at Q6_K, more bits for attn_v / ffn_down in some layers via `use_more_bits`, Q8_0 attention K/V for
    8-expert models, ...), then the fallback for rows that are not a multiple of the block size
    (Q4_K -> Q5_0, Q6_K -> Q8_0, ...). Tensors the quantizer never touches (1-D tensors, norms, biases,
    the router `ffn_gate_inp`) stay F32 as the converter writes them;
  * bytes per tensor = elements / block size x block bytes, with the block sizes of ggml's types
    (GGML_QUANT_SIZES in gguf-py/gguf/constants.py; k-quants carry their super-block scales, e.g. Q4_K
    = 144 bytes per 256 weights = 4.5 bits per weight).

Plain Python (no torch): the planner's llama.cpp target and its export share this inventory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from core.errors import PlannerError

SOURCES = {
    "names": "llama.cpp gguf-py/gguf/constants.py (TENSOR_NAMES, MODEL_TENSORS) and convert_hf_to_gguf.py "
             "(experts merged per projection into blk.N.ffn_*_exps; DeepSeek kv_b split into attn_k_b/attn_v_b)",
    "types": "llama.cpp src/llama-quant.cpp (llama_tensor_get_type, tensor_type_fallback, "
             "llama_ftype_get_default_type)",
    "block_sizes": "llama.cpp gguf-py/gguf/constants.py GGML_QUANT_SIZES (block size, bytes per block)",
}

# (weights per block, bytes per block); k-quants use 256-weight super-blocks with their scales inside
GGML_TYPES: dict[str, tuple[int, int]] = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2),
    "Q4_0": (32, 2 + 16), "Q4_1": (32, 2 + 2 + 16), "Q5_0": (32, 2 + 4 + 16), "Q5_1": (32, 2 + 2 + 4 + 16),
    "Q8_0": (32, 2 + 32),
    "Q2_K": (256, 2 + 2 + 256 // 16 + 256 // 4),
    "Q3_K": (256, 2 + 256 // 4 + 256 // 8 + 12),
    "Q4_K": (256, 2 + 2 + 256 // 2 + 12),
    "Q5_K": (256, 2 + 2 + 256 // 2 + 256 // 8 + 12),
    "Q6_K": (256, 2 + 256 // 2 + 256 // 4 + 256 // 16),
    "IQ4_NL": (32, 2 + 16),
    "MXFP4": (32, 1 + 16),
}

# file type (llama-quantize's name, lower case) -> default tensor type (llama_ftype_get_default_type)
FILE_TYPES: dict[str, str] = {
    "f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0",
    "q5_1": "Q5_1", "q2_k": "Q2_K", "q3_k_s": "Q3_K", "q3_k_m": "Q3_K", "q3_k_l": "Q3_K", "q4_k_s": "Q4_K",
    "q4_k_m": "Q4_K", "q5_k_s": "Q5_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K", "mxfp4_moe": "MXFP4",
}

# tensor_type_fallback: a row length that is not a multiple of the block size falls back to these
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

# llama.cpp's architecture name for each transformers model_type this module can lay out
ARCHES = {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "olmoe": "olmoe",
          "deepseek_v2": "deepseek2", "deepseek_v3": "deepseek2", "gpt_oss": "gpt-oss"}

EXPERT_STEMS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")
SHARED_STEMS = ("ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp")


@dataclass(frozen=True)
class GgufTensor:
    """One tensor of the GGUF file: full name, ggml shape (ne[0] = row length), layer (None outside blocks)."""

    name: str
    ne: tuple[int, ...]
    layer: int | None

    @property
    def stem(self) -> str:
        """The name without `blk.N.` and the `.weight`/`.bias` suffix, e.g. `ffn_gate_exps`."""
        base = self.name.split(".", 2)[2] if self.layer is not None else self.name
        return base.rsplit(".", 1)[0]

    @property
    def elements(self) -> int:
        """Number of values."""
        n = 1
        for d in self.ne:
            n *= d
        return n


@dataclass(frozen=True)
class GgufModel:
    """The tensor inventory of a model plus the hyperparameters llama.cpp's memory figures need."""

    arch: str
    model_type: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_head: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    n_gqa: float                            # n_head / n_head_kv (quantizer rules use it)
    kv_k_per_token: tuple[int, ...]         # K values cached per token, per layer (f16 in the KV cache)
    kv_v_per_token: tuple[int, ...]
    swa_layers: tuple[bool, ...]            # layers with a sliding-window attention cache
    sliding_window: int
    moe_layers: tuple[int, ...]
    tensors: tuple[GgufTensor, ...] = field(default=())

    def names(self) -> list[str]:
        """Every tensor name in file order (layer by layer)."""
        return [t.name for t in self.tensors]


def _get(cfg: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        v = cfg.get(k)
        if v is not None:
            return v
    return default


def inventory(config: Mapping[str, Any]) -> GgufModel:
    """The GGUF tensor layout of a transformers config (see the module docstring for the sources)."""
    mt = str(config.get("model_type", ""))
    if mt not in ARCHES:
        raise PlannerError(f"llama.cpp's tensor layout for model_type '{mt}' is not known here",
                           f"use one of: {', '.join(sorted(ARCHES))}")
    arch = ARCHES[mt]
    d = int(config["hidden_size"])
    L = int(config["num_hidden_layers"])
    vocab = int(config["vocab_size"])
    n_head = int(config["num_attention_heads"])
    n_kv = int(_get(config, "num_key_value_heads", default=n_head))
    hd = int(_get(config, "head_dim", default=d // n_head))
    n_exp = int(_get(config, "num_local_experts", "num_experts", "n_routed_experts", default=0))
    k = int(_get(config, "num_experts_per_tok", "experts_per_token", default=0))
    if n_exp <= 1 or k < 1:
        raise PlannerError(f"the {mt} config has no routed experts (num experts {n_exp}, top-k {k})",
                           "plan an MoE model for the llama.cpp target")
    ff_exp = int(_get(config, "moe_intermediate_size", default=config.get("intermediate_size")))
    ff_dense = int(_get(config, "intermediate_size", default=ff_exp))
    tied = bool(config.get("tie_word_embeddings", False))
    t: list[GgufTensor] = [GgufTensor("token_embd.weight", (d, vocab), None)]

    def add(layer: int, stem: str, ne: tuple[int, ...], bias: tuple[int, ...] | None = None) -> None:
        t.append(GgufTensor(f"blk.{layer}.{stem}.weight", ne, layer))
        if bias is not None:
            t.append(GgufTensor(f"blk.{layer}.{stem}.bias", bias, layer))

    moe_layers = []
    kv_k, kv_v, swa = [], [], []
    layer_types = config.get("layer_types") or []
    window = int(config.get("sliding_window") or 0)
    for i in range(L):
        if arch == "deepseek2":
            moe = i >= int(config.get("first_k_dense_replace") or 0)
        elif arch in ("qwen2moe", "qwen3moe"):
            step = int(config.get("decoder_sparse_step") or 1)
            moe = i not in set(config.get("mlp_only_layers") or []) and (i + 1) % step == 0
        else:
            moe = True
        add(i, "attn_norm", (d,))
        if arch == "deepseek2":
            nope, rope, vh = int(config["qk_nope_head_dim"]), int(config["qk_rope_head_dim"]), int(config["v_head_dim"])
            kv_lora = int(config["kv_lora_rank"])
            q_lora = config.get("q_lora_rank")
            if q_lora:
                add(i, "attn_q_a", (d, int(q_lora)))
                add(i, "attn_q_a_norm", (int(q_lora),))
                add(i, "attn_q_b", (int(q_lora), n_head * (nope + rope)))
            else:
                add(i, "attn_q", (d, n_head * (nope + rope)))
            add(i, "attn_kv_a_mqa", (d, kv_lora + rope))
            add(i, "attn_kv_a_norm", (kv_lora,))
            add(i, "attn_k_b", (nope, kv_lora, n_head))
            add(i, "attn_v_b", (kv_lora, vh, n_head))
            add(i, "attn_output", (n_head * vh, d))
            # llama.cpp caches MLA's compressed latent: K = kv_lora_rank + rope dims, V = kv_lora_rank, one head
            kv_k.append(kv_lora + rope)
            kv_v.append(kv_lora)
        else:
            bias_qkv = arch == "qwen2moe" or bool(config.get("attention_bias"))
            add(i, "attn_q", (d, n_head * hd), (n_head * hd,) if bias_qkv else None)
            add(i, "attn_k", (d, n_kv * hd), (n_kv * hd,) if bias_qkv else None)
            add(i, "attn_v", (d, n_kv * hd), (n_kv * hd,) if bias_qkv else None)
            add(i, "attn_output", (n_head * hd, d), (d,) if arch == "gpt-oss" else None)
            if arch == "qwen3moe":
                add(i, "attn_q_norm", (hd,))
                add(i, "attn_k_norm", (hd,))
            if arch == "olmoe":
                add(i, "attn_q_norm", (n_head * hd,))
                add(i, "attn_k_norm", (n_kv * hd,))
            if arch == "gpt-oss":
                add(i, "attn_sinks", (n_head,))
            kv_k.append(n_kv * hd)
            kv_v.append(n_kv * hd)
        is_swa = (i < len(layer_types) and layer_types[i] == "sliding_attention") and window > 0
        swa.append(is_swa)
        add(i, "post_attention_norm" if arch == "gpt-oss" else "ffn_norm", (d,))
        if not moe:
            add(i, "ffn_gate", (d, ff_dense))
            add(i, "ffn_up", (d, ff_dense))
            add(i, "ffn_down", (ff_dense, d))
            continue
        moe_layers.append(i)
        gpt = arch == "gpt-oss"
        add(i, "ffn_gate_inp", (d, n_exp), (n_exp,) if gpt else None)
        if mt == "deepseek_v3":
            t.append(GgufTensor(f"blk.{i}.exp_probs_b.bias", (n_exp,), i))
        add(i, "ffn_gate_exps", (d, ff_exp, n_exp), (ff_exp, n_exp) if gpt else None)
        add(i, "ffn_up_exps", (d, ff_exp, n_exp), (ff_exp, n_exp) if gpt else None)
        add(i, "ffn_down_exps", (ff_exp, d, n_exp), (d, n_exp) if gpt else None)
        if arch == "deepseek2" and int(config.get("n_shared_experts") or 0) > 0:
            sh = ff_exp * int(config["n_shared_experts"])
            add(i, "ffn_gate_shexp", (d, sh))
            add(i, "ffn_up_shexp", (d, sh))
            add(i, "ffn_down_shexp", (sh, d))
        if arch == "qwen2moe" and int(config.get("shared_expert_intermediate_size") or 0) > 0:
            sh = int(config["shared_expert_intermediate_size"])
            add(i, "ffn_gate_inp_shexp", (d,))
            add(i, "ffn_gate_shexp", (d, sh))
            add(i, "ffn_up_shexp", (d, sh))
            add(i, "ffn_down_shexp", (sh, d))
    t.append(GgufTensor("output_norm.weight", (d,), None))
    if not tied:
        t.append(GgufTensor("output.weight", (d, vocab), None))
    return GgufModel(arch=arch, model_type=mt, n_layer=L, n_embd=d, n_vocab=vocab, n_head=n_head, n_expert=n_exp,
                     n_expert_used=k, n_ff_exp=ff_exp, n_gqa=n_head / max(n_kv, 1) if arch != "deepseek2" else float(n_head),
                     kv_k_per_token=tuple(kv_k), kv_v_per_token=tuple(kv_v), swa_layers=tuple(swa),
                     sliding_window=window, moe_layers=tuple(moe_layers), tensors=tuple(t))


# ------------------------------------------------------------------ types (llama-quant.cpp)
def _quantizable(t: GgufTensor) -> bool:
    """tensor_allows_quantization: 2-D/3-D weights that are not norms or the expert router."""
    return (len(t.ne) >= 2 and t.name.endswith("weight") and "_norm.weight" not in t.name
            and "ffn_gate_inp.weight" not in t.name)


def _category(name: str) -> str:
    """tensor_get_category (substring tests in the same order)."""
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _rule_type(m: GgufModel, t: GgufTensor, ftype: str, default: str, cat: str, i_wv: int, n_wv: int,
               tied: bool) -> str:
    """llama_tensor_get_type_impl for the file types in FILE_TYPES (k-quant and legacy mixtures)."""
    new = default
    n_exp8 = m.n_expert == 8
    if cat == "output" or (tied and cat == "token_embd"):
        blk = GGML_TYPES[new][0]
        if ftype == "mxfp4_moe":
            return "Q8_0"
        if t.ne[0] % blk != 0:
            return "Q8_0"
        return new if new == "Q8_0" else "Q6_K"
    if ftype == "mxfp4_moe":
        return "MXFP4" if len(t.ne) >= 3 and t.ne[2] > 1 else "Q8_0"
    if cat == "token_embd":
        return new
    if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
        if ftype == "q2_k":
            new = "Q4_K" if m.n_gqa >= 4 else "Q3_K"
        elif ftype == "q3_k_m":
            new = "Q5_K" if i_wv < 2 else "Q4_K"
        elif ftype == "q3_k_l":
            new = "Q5_K"
        elif ftype in ("q4_k_m", "q5_k_m") and _use_more_bits(i_wv, n_wv):
            new = "Q6_K"
        elif ftype == "q4_k_s" and i_wv < 4:
            new = "Q5_K"
        if n_exp8:
            new = "Q8_0"   # "for the 8-expert model, bumping this to Q8_0 trades just ~128MB"
        return new
    if cat == "attn_k":
        return "Q8_0" if n_exp8 else new
    if cat == "ffn_down":
        i, n = int(t.layer or 0), m.n_layer
        if ftype == "q2_k":
            new = "Q3_K"
        elif ftype == "q3_k_m":
            new = "Q5_K" if i < n // 16 else "Q4_K"   # (Q3_K only for Falcon)
        elif ftype == "q3_k_l":
            new = "Q5_K"
        elif ftype == "q4_k_m":
            if _use_more_bits(i, n):
                new = "Q6_K"
        elif ftype == "q5_k_m" and _use_more_bits(i, n):
            new = "Q6_K"
        elif ftype == "q4_k_s" and i < n // 8:
            new = "Q5_K"
        return new
    if cat == "attn_output":
        if n_exp8:
            if ftype in ("q2_k", "q3_k_s", "q3_k_m", "q4_k_s", "q4_k_m"):
                new = "Q5_K"
        elif ftype == "q2_k":
            new = "Q3_K"
        elif ftype == "q3_k_m":
            new = "Q4_K"
        elif ftype == "q3_k_l":
            new = "Q5_K"
        return new
    return new


def tensor_types(m: GgufModel, ftype: str) -> dict[str, str]:
    """Type of every tensor in a file quantized to `ftype` (a name in FILE_TYPES) from a BF16 conversion."""
    if ftype not in FILE_TYPES:
        raise PlannerError(f"--quant {ftype} is not a llama.cpp file type known here",
                           f"use one of: {', '.join(FILE_TYPES)}")
    default = FILE_TYPES[ftype]
    quantized = GGML_TYPES[default][0] > 1
    tied = not any(t.name == "output.weight" for t in m.tensors)
    wv = [t.name for t in m.tensors if _category(t.name) in ("attn_v", "attn_qkv", "attn_kv_b")]
    out: dict[str, str] = {}
    for t in m.tensors:
        if not _quantizable(t):
            out[t.name] = "F32"
            continue
        if not quantized:
            out[t.name] = default
            continue
        cat = _category(t.name)
        i_wv = wv.index(t.name) if t.name in wv else 0
        typ = _rule_type(m, t, ftype, default, cat, i_wv, len(wv), tied)
        blk = GGML_TYPES[typ][0]
        if t.ne[0] % blk:
            typ = FALLBACK.get(typ, typ)
            if t.ne[0] % GGML_TYPES[typ][0]:
                typ = "F16"
        out[t.name] = typ
    return out


def tensor_bytes(t: GgufTensor, typ: str) -> int:
    """Bytes of one tensor stored as `typ` (elements / block x block bytes)."""
    blk, size = GGML_TYPES[typ]
    if t.ne[0] % blk:
        raise ValueError(f"{t.name}: row length {t.ne[0]} is not a multiple of the {typ} block ({blk})")
    return t.elements // blk * size


def bits_per_weight(typ: str) -> float:
    """Storage bits per weight of a ggml type, block scales included."""
    blk, size = GGML_TYPES[typ]
    return size * 8 / blk
