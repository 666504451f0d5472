"""fed-expand (FedBE): added transformer blocks and per-client block allocation."""
