"""fed-expand runtime: Flower apps for FedBE block expansion and its baselines (LoRA FedAvg, full FT)."""
