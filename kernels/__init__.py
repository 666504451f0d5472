"""Torch kernels shared by profilers, codegen and runtime (one declared leaf package).

`uniform_quant` (uniform affine quantisation with bit packing), `split_experts` (an MoE expert split
along its intermediate dimension into a top and a bottom segment). Imports torch and `core` only.
"""
