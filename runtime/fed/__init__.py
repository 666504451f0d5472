"""The Flower runtime shared by the federated families: data splits, the launcher, fed-lora's apps."""
