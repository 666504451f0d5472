"""dfgl runtime: one torch.distributed (gloo) process per worker, P2P gossip and halo exchange."""
