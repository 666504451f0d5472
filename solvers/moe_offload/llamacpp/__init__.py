"""llama.cpp's placement space (whole tensors on the GPU or in host memory) for the moe-offload family."""
