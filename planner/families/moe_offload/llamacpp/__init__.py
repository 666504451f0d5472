"""The moe-offload family's llama.cpp target: plans inside llama.cpp's placement space (`--target llama.cpp`)."""
