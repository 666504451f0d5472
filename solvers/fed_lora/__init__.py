"""fed-lora (FedQuad): per-device LoRA depth and activation-quantised blocks for federated fine-tuning."""
