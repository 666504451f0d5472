"""fed-graph (FedGCF): structural clusters, the common-feature client set and the fusion ratio's bandit."""
