import json, time, sys
from runtime.geo_train.launch import run_regions
job = {"regions": 2, "seed": 0, "algorithm": sys.argv[1], "H": 8, "N": 4, "tau": 1, "alpha": 0.0, "lam0": 0.2,
       "kappa": 4e-4, "adaptive": True, "compensate": True, "groups": [[0], [1]], "inner_lr": 3e-3,
       "outer_lr": 0.7, "outer_momentum": 0.9, "batch": 8, "seq_len": 32, "steps": 24, "eval_every": 8,
       "timeout_s": 20, "wan": {"rate_bps": 1e9, "rtt_s": 0.01},
       "data": {"vocab": 128, "sources": 2, "eval_batch": 16},
       "model_config": {"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64}}
t=time.time()
logs = run_regions(job, 120)
print(time.time()-t)
for l in logs:
    print(l["choices"], l["lambdas"][:6], l["manager_step"], l["eval"], l["blocked_s"], l["payload_bytes"], sum(l["step_s"]))
