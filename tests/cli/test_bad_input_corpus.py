"""The bad-input corpus: every case ends with exit code 2, exactly one line on stderr that starts with
`error:` and names the problem, no traceback, and nothing written or changed on disk.

Cases run in-process (`planner.cli.main(argv)`) inside one prepared folder (tests/cli/corpus_fixtures.py);
paths in the cases are relative to it. A fragment list names what the one line must contain (the flag,
file or field at fault, and words of the fix).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from planner.cli import main
from tests.cli.corpus_fixtures import snapshot

PLAN = ["plan", "mixtral-8x7b", "--hardware", "a100_24gb"]
SMALL = ["plan", "small_moe.json", "--hardware", "a100_24gb"]
SPLIT = ["plan", "digits-cnn", "--hardware", "raspberry_pi5_8gb", "--cloud", "a100_80gb"]
LONG = "q" * 300 + ".json"
GEO = ["plan", "lm-small", "--scenario", "geo-train", "-o", "geo.json"]
FG_GRAPH = "csbm-clients:nodes=160,groups=2,clients=4,degree=8,features=6"
FG = ["plan", "gcn", "--scenario", "fed-graph", "--clients", "gen:4", "-o", "fg.json", "--graph", FG_GRAPH]
SPEC = ["plan", "smollm2-135m", "--scenario", "spec-serve", "--workload", "mix:code,chat,math:6", "-o", "spec.json",
        "--nodes"]

CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    # ---- names
    ("unknown model", ["plan", "mixtral-8x7", "--hardware", "a100_24gb"], ("unknown model 'mixtral-8x7'", "mixtral-8x7b")),
    ("unknown hardware", ["plan", "mixtral-8x7b", "--hardware", "a100_24g"], ("unknown hardware", "a100_24gb")),
    ("capped above base", ["plan", "mixtral-8x7b", "--hardware", "a100_200gb"], ("more memory than",)),
    ("capped at zero", ["plan", "mixtral-8x7b", "--hardware", "a100_0gb"], ("caps memory at 0",)),
    ("unknown cloud", SPLIT + ["--cloud", "a200"], ("unknown hardware 'a200' (--cloud)",)),
    ("unknown scenario", PLAN + ["--scenario", "moe-offlod"], ("unknown scenario", "moe-offload")),
    ("unknown factory", ["plan", "nosuch_pkg.mod:make", "--hardware", "a100_24gb"], ("cannot import model factory",)),
    ("dense model alone", ["plan", "resnet50", "--hardware", "a100_24gb"], ("no scenario applies", "--cloud")),
    ("moe scenario on dense", ["plan", "resnet50", "--hardware", "a100_24gb", "--scenario", "moe-offload"],
     ("has no MoE layers",)),
    ("hardware file missing", ["plan", "mixtral-8x7b", "--hardware", "nope/hw.yaml"], ("does not exist",)),
    ("hardware efficiency > 1", ["plan", "mixtral-8x7b", "--hardware", "eff15.yaml"], ("efficiency_compute", "cannot exceed 1")),
    ("hardware unknown field", ["plan", "mixtral-8x7b", "--hardware", "extra_field.yaml"], ("unknown field", "speed")),
    ("hardware negative memory", ["plan", "mixtral-8x7b", "--hardware", "neg_memory.yaml"], ("memory_bytes",)),
    ("hardware not a mapping", ["plan", "mixtral-8x7b", "--hardware", "list.yaml"], ("does not hold a mapping",)),
    # ---- client populations: refused before anything is allocated for them
    ("population gen too large", ["plan", "digits-cnn", "--clients", "gen:10000000", "--scenario", "fed-compress"],
     ("gen:10000000", "10,000,000 devices", "at most 100,000")),
    ("population count too large", ["plan", "digits-cnn", "--clients", "huge_pop.yaml", "--scenario", "fed-compress"],
     ("huge_pop.yaml", "1,000,000,000 devices", "at most 100,000")),
    ("population too large (fed-lora)", ["plan", "minilm", "--clients", "gen:10000000", "--scenario", "fed-lora"],
     ("gen:10000000", "at most 100,000")),
    ("convergence record not a record", ["plan", "digits-cnn", "--clients", "gen:12", "--scenario", "fed-compress",
                                         "--convergence", "array.json"],
     ("--convergence array.json", "not a fed-compress convergence record", "benchmarks.fed_compress")),
    ("convergence record not JSON", ["plan", "digits-cnn", "--clients", "gen:12", "--scenario", "fed-compress",
                                     "--convergence", "notjson.json"], ("--convergence notjson.json", "not readable")),
    # ---- model config files
    ("config 0 experts", ["plan", "zero_experts.json", "--hardware", "a100_24gb"], ("zero_experts.json", "0 experts")),
    ("config unknown type", ["plan", "unknown_type.json", "--hardware", "a100_24gb"], ("model_type 'no_such_arch'",)),
    ("config non-numeric", ["plan", "nonnumeric.json", "--hardware", "a100_24gb"], ("hidden_size", "not a whole number")),
    ("config top-k 0", ["plan", "topk0.json", "--hardware", "a100_24gb"], ("top-k", "between 1 and 8")),
    ("config top-k > experts", ["plan", "topk9.json", "--hardware", "a100_24gb"], ("top-k", "9", "8 experts")),
    ("config no model_type", ["plan", "no_type.json", "--hardware", "a100_24gb"], ("no 'model_type'",)),
    ("config not JSON", ["plan", "notjson.json", "--hardware", "a100_24gb"], ("not valid JSON",)),
    ("config not an object", ["plan", "array.json", "--hardware", "a100_24gb"], ("does not hold a JSON object",)),
    ("config missing", ["plan", "nope/config.json", "--hardware", "a100_24gb"], ("does not exist",)),
    ("config with --tiny", SMALL + ["--tiny"], ("no tiny same-architecture version",)),
    # ---- units and ranges (moe-offload)
    ("budget bare number", PLAN + ["--expert-budget", "12"], ("--expert-budget", "no unit", "12GiB")),
    ("budget unknown unit", PLAN + ["--expert-budget", "12XB"], ("unknown unit 'XB'",)),
    ("budget share > 100%", PLAN + ["--expert-budget", "150%"], ("between 0% and 100%",)),
    ("budget negative", PLAN + ["--expert-budget=-5GiB"], ("negative",)),
    ("budget garbage", PLAN + ["--expert-budget", "lots"], ("cannot read --expert-budget",)),
    ("context 0", PLAN + ["--context", "0"], ("--context 0", "at least 1")),
    ("batch negative", PLAN + ["--batch=-1"], ("--batch -1", "at least 1")),
    ("batch not a number", PLAN + ["--batch", "x"], ("--batch 'x'", "whole number")),
    ("expert bits 3", PLAN + ["--expert-bits", "3"], ("--expert-bits", "16, 8, 4")),
    ("trace missing", PLAN + ["--trace", "missing.npz"], ("--trace missing.npz", "does not exist")),
    ("trace truncated", SMALL + ["--trace", "trunc.npz"], ("not a routing trace",)),
    ("trace is text", SMALL + ["--trace", "text.npz"], ("not a routing trace",)),
    ("trace other zip", SMALL + ["--trace", "other.npz"], ("not a routing trace",)),
    ("trace for another shape", SMALL + ["--trace", "wrong_shape.npz"], ("2 MoE layers", "--preset")),
    ("plan trace tokens 0", PLAN + ["--trace-tokens", "0"], ("--trace-tokens 0", "at least 16")),
    ("plan trace preset unknown", PLAN + ["--trace-preset", "zipf"], ("--trace-preset", "moepic-calibrated")),
    ("granularity 0", PLAN + ["--theta-granularity", "0"], ("--theta-granularity 0", "at least 1")),
    ("granularity not dividing", SMALL + ["--theta-granularity", "7"], ("granularity 7", "does not divide")),
    ("k-prefetch above experts", SMALL + ["--k-prefetch", "99"], ("--k-prefetch 99",)),
    ("sim tokens 0", PLAN + ["--sim-tokens", "0"], ("--sim-tokens 0",)),
    ("inner unknown", PLAN + ["--inner", "magic"], ("--inner", "fixed_point")),
    ("budget does not fit", SMALL + ["--hardware", "a100_1gb", "--expert-budget", "900MiB"], ("does not fit", "--expert-budget")),
    ("device too small", ["plan", "mixtral-8x7b", "--hardware", "a100_2gb"], ("at least", "GiB")),
    ("calibration missing", PLAN + ["--calibration", "nope.yaml"], ("--calibration nope.yaml", "does not exist")),
    ("calibration not one", PLAN + ["--calibration", "moe.json"], ("not a calibration file",)),
    ("calibration of other family", SMALL + ["--calibration", "cal_split.yaml"], ("measured for split-inference",)),
    ("speed spread below 1", SPLIT + ["--link", "5mbps", "--speed-spread", "0.5"], ("--speed-spread", "at least 1")),
    ("split flag on moe plan", SMALL + ["--rtt", "30ms"], ("--rtt is a split-inference flag", "moe-offload")),
    ("no hardware for moe", ["plan", "mixtral-8x7b"], ("need a device profile", "--hardware")),
    ("target tpot bare number", PLAN + ["--target-tpot", "100"], ("--target-tpot", "no unit", "30ms")),
    ("target tpot zero", PLAN + ["--target-tpot", "0ms"], ("--target-tpot", "positive")),
    ("two dual targets", PLAN + ["--target-tpot", "80ms", "--target-ttft", "2s"], ("both given", "one target")),
    ("context shorter than the request", PLAN + ["--context", "1024", "--prompt-tokens", "8192"],
     ("--context 1024 is shorter than the request", "--context 8448")),
    ("target tpot unreachable", PLAN + ["--target-tpot", "1us", "--trace-tokens", "600", "--sim-tokens", "50"],
     ("no expert budget meets TPOT", "reaches", "--target-tpot")),
    ("moe on a measured cpu with no host link", ["plan", "mixtral-8x7b", "--hardware", "measured_cpu.yaml"],
     ("without a host link", "GPU profile")),
    ("ttft objective without prompt", PLAN + ["--objective", "ttft", "--prompt-tokens", "0"],
     ("--objective ttft needs a prompt", "--prompt-tokens")),
    ("prompt tokens negative", PLAN + ["--prompt-tokens", "-1"], ("--prompt-tokens -1", "at least 0")),
    ("output tokens zero", PLAN + ["--output-tokens", "0"], ("--output-tokens 0", "at least 1")),
    ("dual mode for llama.cpp", PLAN + ["--target", "llama.cpp", "--target-tpot", "80ms"],
     ("--target-tpot", "not to --target llama.cpp")),
    ("objective for llama.cpp", PLAN + ["--target", "llama.cpp", "--objective", "ttft"], ("--objective", "minimises TPOT")),
    ("llama.cpp flag without target", PLAN + ["--quant", "q8_0"], ("--quant applies to --target llama.cpp",)),
    # ---- units and ranges (split-inference)
    ("rtt bare number", SPLIT + ["--rtt", "30"], ("--rtt", "no unit", "30ms")),
    ("rtt unknown unit", SPLIT + ["--rtt", "30 fortnights"], ("cannot read --rtt",)),
    ("link bare number", SPLIT + ["--link", "20"], ("--link", "no unit", "20mbps")),
    ("link 1 bps", SPLIT + ["--link", "1bps"], ("--link 1bps", "out of range")),
    ("link zero", SPLIT + ["--link", "0mbps"], ("bandwidth of 0",)),
    ("link range reversed", SPLIT + ["--link", "100mbps..1mbps"], ("range", "is empty")),
    ("link garbage", SPLIT + ["--link", "fast"], ("cannot read --link 'fast'",)),
    ("epsilon bare", SPLIT + ["--link", "5mbps", "--epsilon", "0.01"], ("--epsilon", "percentage")),
    ("epsilon 100%", SPLIT + ["--link", "5mbps", "--epsilon", "100%"], ("--epsilon 100%", "below 100%")),
    ("epsilon negative", SPLIT + ["--link", "5mbps", "--epsilon=-1%"], ("--epsilon -1%", "out of range")),
    ("max-latency zero", SPLIT + ["--link", "5mbps", "--max-latency", "0ms"], ("--max-latency 0ms",)),
    ("max-latency unreachable", SPLIT + ["--link", "5mbps", "--max-latency", "1us"],
     ("--max-latency", "Raise --max-latency to at least")),
    ("min-throughput unreachable", SPLIT + ["--link", "5mbps", "--min-throughput", "1e9"],
     ("--min-throughput", "Lower --min-throughput to at most")),
    ("objective of another family", SPLIT + ["--link", "5mbps", "--objective", "tpot"],
     ("--objective 'tpot'", "throughput, latency, coach")),
    ("objective unknown", SPLIT + ["--link", "5mbps", "--objective", "speed"], ("--objective 'speed'",)),
    ("table levels 1", SPLIT + ["--link", "1mbps..9mbps", "--table-levels", "1"], ("--table-levels 1",)),
    ("moe flag on split plan", SPLIT + ["--expert-budget", "1GiB"], ("--expert-budget is a moe-offload flag",)),
    # ---- kv-budget
    ("kv-budget on a CNN", ["plan", "resnet50", "--hardware", "a100_24gb", "--scenario", "kv-budget", "--workload",
                            "ruler:niah@1k:4"], ("resnet50 has no decoder attention layers", "smollm2-135m")),
    ("kv-budget on gpt2", ["plan", "gpt2", "--hardware", "a100_24gb", "--scenario", "kv-budget", "--workload",
                           "ruler:niah@1k:4"], ("GPT2Config", "Llama-style")),
    ("kv-budget no workload", ["plan", "gpt2", "--hardware", "a100_24gb", "--scenario", "kv-budget"],
     ("need a prompt workload", "--workload")),
    ("kv-budget p_nuc 0", ["plan", "gpt2", "--hardware", "a100_24gb", "--p-nuc", "0", "--workload", "ruler:niah@1k:4"],
     ("--p-nuc 0.0 is outside (0, 1]",)),
    ("kv-budget p_nuc 1.5", ["plan", "gpt2", "--hardware", "a100_24gb", "--p-nuc", "0.9,1.5", "--workload",
                             "ruler:niah@1k:4"], ("--p-nuc 1.5 is outside (0, 1]",)),
    ("kv-budget S 0", ["plan", "gpt2", "--hardware", "a100_24gb", "--samples", "0", "--workload", "ruler:niah@1k:4"],
     ("--samples 0", "at least 1")),
    ("kv-budget workload too long", ["plan", "smollm2-135m", "--hardware", "a100_24gb", "--scenario", "kv-budget",
                                     "--workload", "ruler:niah@16k:4"], ("16384 tokens", "8192", "at most 8128")),
    ("kv-budget drop 150%", ["plan", "gpt2", "--hardware", "a100_24gb", "--max-accuracy-drop", "150%", "--workload",
                             "ruler:niah@1k:4"], ("--max-accuracy-drop", "out of range")),
    ("kv-budget spans not A:R", ["plan", "gpt2", "--hardware", "a100_24gb", "--spans", "4", "--workload",
                                 "ruler:niah@1k:4"], ("--spans '4' is not ANCHORS:SPAN", "4:8")),
    ("kv-budget unknown budget", ["plan", "gpt2", "--hardware", "a100_24gb", "--budget", "top,all", "--workload",
                                  "ruler:niah@1k:4"], ("--budget 'all'", "top, nucleus")),
    # ---- plan output paths
    ("plan -o user file", SMALL + ["-o", "f"], ("-o f exists", "--force")),
    ("plan -o directory", SMALL + ["-o", "d"], ("-o d is a directory",)),
    ("plan -o device", SMALL + ["-o", "/dev/null"], ("character device",)),
    ("plan -o below a file", SMALL + ["-o", "f/plan.json"], ("lies below f", "not a directory")),
    ("plan -o name too long", SMALL + ["-o", LONG], ("file name is 305 bytes",)),
    ("plan -o no name", SMALL + ["-o", "d/.."], ("has no file name",)),
    # ---- inspect
    ("inspect missing", ["inspect", "nope.json"], ("does not exist",)),
    ("inspect truncated", ["inspect", "truncated.json"], ("not valid JSON",)),
    ("inspect array", ["inspect", "array.json"], ("not an object",)),
    ("inspect v99", ["inspect", "v99.json"], ("schema_version 99",)),
    ("inspect no model", ["inspect", "nomodel.json"], ("missing 'model'",)),
    ("inspect string objective", ["inspect", "strobj.json"], ("objective.value", "not a number")),
    ("inspect split ratio 1.7", ["inspect", "ratio17.json"], ("violates its constraints", "split_ratio 1.7")),
    ("inspect negative budget", ["inspect", "negbudget.json"], ("violates its constraints",)),
    ("inspect negative slots", ["inspect", "negslots.json"], ("violates its constraints", "cached_experts -2")),
    ("inspect unknown family", ["inspect", "nofamily.json"], ("unknown family 'nosuch-family'",)),
    ("inspect plot format", ["inspect", "moe.json", "--plot", "out.txt"], ("unknown figure format '.txt'",)),
    ("inspect plot user file", ["inspect", "moe.json", "--plot", "user.png"], ("--plot user.png exists", "not a figure")),
    ("inspect plot over file", ["inspect", "moe.json", "--plot", "d/notes.txt"], ("unknown figure format",)),
    # ---- the numbers of a plan, wherever it is read (round 2)
    ("inspect objective negative", ["inspect", "negobj.json"], ("negobj.json", "objective.value (e2e_ms) is -1", "cannot be negative")),
    ("emit objective negative", ["emit", "negobj.json", "-o", "new_build"], ("objective.value (e2e_ms) is -1",)),
    ("diff objective negative", ["diff", "moe.json", "negobj.json"], ("objective.value (e2e_ms) is -1",)),
    ("export objective negative", ["export", "negobj.json", "--to", "llama.cpp"], ("objective.value (e2e_ms) is -1",)),
    ("inspect objective not its metric", ["inspect", "mismatch.json"], ("objective.value is", "predicted e2e_ms is")),
    ("inspect hit rate 1.5", ["inspect", "hit15.json"], ("predicted.hit_rate is 1.5", "between 0 and 1")),
    ("inspect baseline negative time", ["inspect", "negbase.json"], ("baselines.", "tpot_ms is -3", "cannot be negative")),
    ("inspect decisions lack a field", ["inspect", "nokey.json"], ("violates its constraints", "'budget_bytes'")),
    ("inspect a directory", ["inspect", "d"], ("cannot read plan file d", "it is a directory")),
    # ---- a user's figures, another command's outputs, an artifact's files (round 2)
    ("inspect plot over a user's matplotlib png", ["inspect", "moe.json", "--plot", "holiday.png"],
     ("--plot holiday.png exists", "not a figure written by")),
    ("inspect plot over a user's matplotlib pdf", ["inspect", "moe.json", "--plot", "holiday.pdf", ], ("--plot holiday.pdf exists",)),
    ("inspect plot over a user's matplotlib svg", ["inspect", "moe.json", "--plot", "holiday.svg"], ("--plot holiday.svg exists",)),
    ("plan -o a trace forced", SMALL + ["-o", "wrong_shape.npz", "--force"],
     ("-o wrong_shape.npz is a routing trace written by `planner trace`", "not a plan", "even with --force")),
    ("plan -o a calibration file forced", SMALL + ["-o", "cal_split.yaml", "--force"],
     ("is a calibration file written by `planner calibrate`",)),
    ("trace -o a plan forced", ["trace", "mixtral-8x7b", "--preset", "bursty", "-o", "moe.json", "--force"],
     ("-o moe.json is a plan written by `planner plan`", "not a routing trace")),
    ("plan -o an artifact's plan", SMALL + ["-o", "art/plan.json"], ("lies inside the artifact art", "re-emit")),
    ("plan -o an artifact's plan forced", SMALL + ["-o", "art/plan.json", "--force"], ("lies inside the artifact art",)),
    ("plan -o a new file in an artifact", SMALL + ["-o", "art/mine.json"], ("lies inside the artifact art",)),
    ("emit into an artifact", ["emit", "tiny.json", "-o", "art/sub"], ("lies inside the artifact art",)),
    ("plan -o unwritable directory", SMALL + ["-o", "/sys/x.json"], ("-o /sys/x.json", "cannot write in /sys")),
    ("emit -o unwritable directory", ["emit", "tiny.json", "-o", "/sys/build"], ("-o /sys/build", "cannot write in /sys")),
    # ---- messages (round 2)
    ("run a plan file", ["run", "split.json"], ("split.json is a plan, not an artifact", "planner emit split.json -o")),
    ("run a plain file", ["run", "f"], ("f is a file, not an artifact directory",)),
    ("plan a local directory without config", ["plan", "emptymix", "--hardware", "a100_24gb"],
     ("directory emptymix holds no config.json",)),
    ("population is a directory", ["plan", "minilm", "--clients", "d", "--scenario", "fed-lora"], ("it is a directory",)),
    ("fed-lora utility fit missing", ["plan", "minilm", "--clients", "gen:4", "--scenario", "fed-lora", "--utility-fit",
                                     "nofit.json"], ("--utility-fit nofit.json", "cannot read", "fed_lora_pilot.py")),
    ("fed-lora utility fit is a plan", ["plan", "minilm", "--clients", "gen:4", "--scenario", "fed-lora",
                                       "--utility-fit", "moe.json"], ("--utility-fit moe.json", "'gamma'")),
    # ---- diff
    ("diff tolerance bare", ["diff", "moe.json", "moe.json", "--tolerance", "1"], ("--tolerance", "percentage")),
    ("diff tolerance negative", ["diff", "moe.json", "moe.json", "--tolerance=-1%"], ("--tolerance -1%",)),
    ("diff different requests", ["diff", "moe.json", "tiny.json"], ("different requests", "tiny")),
    ("diff different families", ["diff", "moe.json", "split.json"], ("different requests", "family")),
    ("diff missing", ["diff", "moe.json", "nope.json"], ("does not exist",)),
    ("diff max rows 0", ["diff", "moe.json", "moe.json", "--max-rows", "0"], ("--max-rows 0",)),
    # ---- emit
    ("emit into user dir", ["emit", "tiny.json", "-o", "d"], ("-o d is a directory that `planner emit` did not write", "--force")),
    ("emit onto a file", ["emit", "tiny.json", "-o", "f"], ("-o f is a file",)),
    ("emit onto a file forced", ["emit", "tiny.json", "-o", "f", "--force"], ("-o f is a file", "never replaced")),
    ("emit onto a device", ["emit", "tiny.json", "-o", "/dev/null", "--force"], ("character device",)),
    ("emit over a tampered artifact", ["emit", "tiny.json", "-o", "tampered"], ("did not write (or whose files were changed",)),
    ("emit invalid plan", ["emit", "ratio17.json", "-o", "new_build"], ("violates its constraints",)),
    ("emit seed not a number", ["emit", "tiny.json", "-o", "new_build", "--seed", "x"], ("--seed 'x'",)),
    ("emit run flag", ["emit", "tiny.json", "-o", "new_build", "--max-new-tokens", "3"], ("unrecognized arguments",)),
    ("emit below a file", ["emit", "tiny.json", "-o", "f/build"], ("lies below f",)),
    # ---- run
    ("run missing", ["run", "nope_dir"], ("does not exist",)),
    ("run no manifest", ["run", "nomanifest"], ("no manifest.json",)),
    ("run tampered", ["run", "tampered"], ("runtime.yaml is corrupted",)),
    ("run not an artifact", ["run", "d"], ("no manifest.json",)),
    ("run tokens 0", ["run", "art", "--max-new-tokens", "0"], ("--max-new-tokens 0",)),
    ("run policy unknown", ["run", "art", "--policy", "fifo"], ("--policy", "lcp")),
    ("run baseline unknown", ["run", "art", "--baseline", "nosuch"], ("no runnable baseline 'nosuch'",)),
    ("run temperature negative", ["run", "art", "--temperature=-1"], ("--temperature -1",)),
    ("run json onto user file", ["run", "art", "--json", "f"], ("--json f exists", "--force")),
    ("run json onto device", ["run", "art", "--json", "/dev/null"], ("character device",)),
    ("run empty prompt", ["run", "art", "--prompt", ""], ("--prompt is empty",)),
    # ---- trace
    ("trace tokens 0", ["trace", "mixtral-8x7b", "--tiny", "-o", "t.npz", "--max-new-tokens", "0"], ("--max-new-tokens 0",)),
    ("trace dense model", ["trace", "digits-cnn", "--tiny", "-o", "t.npz"], ("has no MoE layers",)),
    ("trace needs tiny", ["trace", "mixtral-8x7b", "-o", "t.npz"], ("--tiny",)),
    ("trace preset unknown", ["trace", "mixtral-8x7b", "--preset", "zipf", "-o", "t.npz"], ("unknown trace preset",)),
    ("trace onto user file", ["trace", "mixtral-8x7b", "--preset", "bursty", "-o", "f"], ("-o f exists",)),
    ("trace prompts missing", ["trace", "mixtral-8x7b", "--tiny", "-o", "t.npz", "--prompts", "nope.txt"],
     ("--prompts nope.txt does not exist",)),
    ("trace prompts empty", ["trace", "mixtral-8x7b", "--tiny", "-o", "t.npz", "--prompts", "prompts_empty.txt"],
     ("has no prompts",)),
    ("trace temperature negative", ["trace", "mixtral-8x7b", "--tiny", "-o", "t.npz", "--temperature=-0.5"],
     ("--temperature -0.5",)),
    # ---- dfgl
    ("dfgl link without unit", ["plan", "gcn", "--workers", "workers_nounit.yaml", "--graph", "csbm:nodes=300,workers=3"],
     ("link w0-w1 rate", "no unit")),
    ("dfgl disconnected links", ["plan", "gcn", "--workers", "workers_cut.yaml", "--graph", "csbm:nodes=300,workers=3"],
     ("do not connect every worker", "spanning")),
    ("dfgl more workers than communities", ["plan", "gcn", "--workers", "gen:8", "--graph", "csbm:nodes=9,degree=1,workers=8"],
     ("more than this graph's communities allow", "fewer workers")),
    ("dfgl graph and workers disagree", ["plan", "gcn", "--workers", "gen:4", "--graph", "csbm:nodes=300,workers=8"],
     ("into 8 workers but --workers has 4",)),
    ("dfgl workers missing", ["plan", "gcn", "--workers", "nope.yaml", "--graph", "csbm:nodes=300,workers=3"],
     ("--workers nope.yaml", "does not exist")),
    ("dfgl workers gen 1", ["plan", "gcn", "--workers", "gen:1", "--graph", "csbm:nodes=300,workers=1"],
     ("fewer than 2 workers",)),
    ("dfgl on a CNN", ["plan", "digits-cnn", "--scenario", "dfgl", "--workers", "gen:3", "--graph", "csbm:nodes=300"],
     ("dfgl trains a GNN", "gcn or sage")),
    ("dfgl unreachable target", ["plan", "gcn", "--workers", "gen:3", "--graph", "csbm:nodes=300,workers=3", "--rounds", "2",
                                 "--episodes", "1", "--target-accuracy", "99.9%"],
     ("no schedule reaches global accuracy 0.999 within 2 rounds", "Lower --target-accuracy or raise --rounds")),
    ("dfgl unknown metric", ["plan", "gcn", "--workers", "gen:3", "--graph", "csbm:nodes=300,workers=3", "--metric", "f1"],
     ("--metric", "global")),
    # ---- fed-graph (the graph is tiny: every case fails before the pilot)
    ("fed-graph graphs without features", FG[:-1] + ["csbm-clients:nodes=160,groups=2,clients=4,features=0"],
     ("features >= 1", "--graph")),
    ("fed-graph k above client count", FG + ["--clusters", "9"], ("--clusters 9", "4 clients", "between 1 and 4")),
    ("fed-graph empty common set", FG + ["--delta", "1"], ("common-feature set is empty", "Lower --delta")),
    ("fed-graph beta grid outside [0, 1]", FG + ["--beta-grid", "0,1.5"], ("--beta-grid", "outside [0, 1]", "between 0 and 1")),
    ("fed-graph beta grid not numbers", FG + ["--beta-grid", "x"], ("--beta-grid 'x'", "0..1:0.1")),
    ("fed-graph graph and clients disagree", FG[:-1] + ["csbm-clients:nodes=160,groups=2,clients=6,degree=4"],
     ("holds 6 clients but --clients lists 4",)),
    ("fed-graph client graphs too small for the degree", FG[:-1] + ["csbm-clients:nodes=160,groups=2,clients=6"],
     ("26 nodes per client", "degree 12", "Raise nodes= or lower degree=")),
    ("fed-graph labelled share out of range", FG[:-1] + ["csbm-clients:nodes=160,groups=2,clients=4,degree=8,features=6,"
                                                          "labelled=0.9"], ("labelled=0.9 is not a share", "labelled=0.4")),
    ("fed-graph labelled shares do not match the groups", FG[:-1] + ["csbm-clients:nodes=160,groups=2,clients=4,degree=8,"
                                                                     "features=6,labelled=0.4/0.1/0.4"],
     ("3 shares for 2 groups", "one share per group")),
    ("fed-graph unreachable target", FG + ["--rounds", "2", "--accuracy-target", "99%"],
     ("no configuration reaches validation accuracy 0.990", "Lower --accuracy-target")),
    ("fed-graph on a CNN", ["plan", "digits-cnn", "--scenario", "fed-graph", "--clients", "gen:4", "--graph", FG_GRAPH],
     ("fed-graph trains a GCN",)),
    # ---- profile, hardware, calibrate, export, argparse
    ("profile negative seq-len", ["profile", "mixtral-8x7b", "--seq-len", "-4"], ("--seq-len -4", "at least 1")),
    ("profile unknown model", ["profile", "mixtral-8x7"], ("unknown model",)),
    ("truncated model too deep", ["profile", "smollm2-135m:31L"], ("smollm2-135m:31L keeps 31 layers", "1 <= N <= 30")),
    ("truncated model 0 layers", ["plan", "smollm2-135m:0L", "--hardware", "a100_24gb"], ("keeps 0 layers",)),
    ("truncated model of an unknown base", ["profile", "smollm3:8L"], ("unknown model 'smollm3:8L'",)),
    # ---- fed-expand
    ("fed-expand model without blocks", ["plan", "digits-cnn", "--scenario", "fed-expand", "--clients", "gen:4"],
     ("digits-cnn has no transformer decoder blocks", "smollm2-135m")),
    ("fed-expand more blocks than the model", ["plan", "smollm2-135m:8L", "--scenario", "fed-expand", "--clients", "gen:4",
                                               "--added-blocks", "9"], ("--added-blocks 9", "8 blocks", "Add at most 8")),
    ("fed-expand client cannot hold a block", ["plan", "smollm2-135m:8L", "--tiny", "--scenario", "fed-expand",
                                               "--clients", "fe_small.yaml", "--local-steps", "1"],
     ("client tiny-phone", "64 KiB", "needs", "--allow-sit-out")),
    ("fed-expand unknown task", ["plan", "smollm2-135m:8L", "--scenario", "fed-expand", "--clients", "gen:4",
                                 "--data", "instruct:sort+fromat"], ("unknown instruction task 'fromat'", "format")),
    ("fed-expand data not instruct", ["plan", "smollm2-135m:8L", "--scenario", "fed-expand", "--clients", "gen:4",
                                      "--data", "corpus:clients=4"], ("instruction data", "instruct:4tasks")),
    ("hardware show unknown", ["hardware", "show", "a100"], ("unknown hardware",)),
    ("hardware measure onto file", ["hardware", "measure", "-o", "f"], ("-o f exists",)),
    ("hardware measure onto dir", ["hardware", "measure", "-o", "d"], ("is a directory",)),
    ("calibrate unknown scenario", ["calibrate", "mixtral-8x7b", "--scenario", "nope", "-o", "c.yaml"], ("unknown scenario",)),
    ("calibrate moe without tiny", ["calibrate", "mixtral-8x7b", "--scenario", "moe-offload", "-o", "c.yaml"], ("--tiny",)),
    ("calibrate onto user file", ["calibrate", "digits-cnn", "--scenario", "split-inference", "-o", "f"], ("-o f exists",)),
    ("calibrate rescale missing", ["calibrate", "digits-cnn", "--scenario", "split-inference", "--rescale", "nope.yaml",
                                   "-o", "c.yaml"], ("--rescale nope.yaml", "does not exist")),
    ("calibrate rescale other model", ["calibrate", "digits-cnn", "--scenario", "split-inference", "--rescale",
                                       "cal_split.yaml", "-o", "c.yaml"], ("--rescale cal_split.yaml", "was measured on x")),
    ("export unknown target", ["export", "moe.json", "--to", "vllm"], ("cannot be exported to 'vllm'",)),
    ("export invalid plan", ["export", "ratio17.json", "--to", "llama.cpp"], ("violates its constraints",)),
    # ---- spec-serve
    ("spec drafter with another tokenizer", SPEC + ["spec_nodes.yaml", "--drafters", "ee4,gpt2"],
     ("drafter gpt2's tokenizer differs", "smollm2-135m", "eeK")),
    ("spec no verifier", SPEC + ["spec_nover.yaml"], ("spec_nover.yaml names no verifier", "role: verifier")),
    ("spec unknown hardware", SPEC + ["spec_badhw.yaml"], ("unknown hardware 'jetson_orin_nan_8gb'", "jetson_orin_nano_8gb")),
    ("spec link without unit", SPEC + ["spec_nounit.yaml"], ("link hub-edge1 rate", "no unit")),
    ("spec unreachable node", SPEC + ["spec_cut.yaml"], ("drafter node 'edge2' is unreachable", "Add a link")),
    ("spec arrival without unit", SPEC + ["spec_nodes.yaml", "--arrival", "4"], ("--arrival '4'", "4rps")),
    ("spec distilled drafter of an unknown domain", SPEC + ["spec_nodes.yaml", "--drafters", "dist2-poetry,ngram"],
     ("dist2-poetry", "no domain 'poetry'", "dist2-code")),
    ("spec distilled drafter as deep as the target", SPEC + ["spec_nodes.yaml", "--drafters", "dist30-code"],
     ("dist30-code", "1..29 blocks")),
    # ---- geo-train
    ("geo WAN too slow", GEO + ["--regions", "regions_slow.yaml"], ("too slow for any schedule", "at least", "Mbit/s")),
    ("geo more fragments than layers", GEO + ["--regions", "regions.yaml", "--fragments", "5"],
     ("5 fragments asked for a model with 4 layers", "at most 4")),
    ("geo H not a multiple of N", GEO + ["--regions", "regions.yaml", "--inner-steps", "30", "--sends", "4"],
     ("--inner-steps 30 is not a multiple of --sends 4", "--sends 3")),
    ("geo link without unit", GEO + ["--regions", "regions_nounit.yaml"], ("rate", "no unit")),
    ("geo no wan", GEO + ["--regions", "regions_nowan.yaml"], ("no 'wan'",)),
    ("geo negative step jitter", GEO + ["--regions", "regions_badjitter.yaml"], ("step_jitter '-5ms' is negative", "30ms")),
    ("geo unknown merge", GEO + ["--regions", "regions.yaml", "--merge", "newton"], ("--merge 'newton' is not one of the choices", "alpha-blend")),
    ("geo regions missing", GEO + ["--regions", "nope.yaml"], ("--regions nope.yaml", "does not exist")),
    ("geo encoder model", ["plan", "bert-base", "--scenario", "geo-train", "--regions", "regions.yaml"],
     ("decoder language models",)),
    ("geo unknown data split", GEO + ["--regions", "regions.yaml", "--data", "corpus:by-topic"],
     ("unknown corpus split 'by-topic'", "corpus:by-source")),
    ("no command", [], ("required",)),
    ("unknown command", ["plann"], ("invalid choice",)),
    ("plan without model", ["plan"], ("required", "model")),
    ("unknown flag", PLAN + ["--vram-cap", "1GiB"], ("unrecognized arguments: --vram-cap",)),
    ("another family's flag", PLAN + ["--budget", "1GiB"], ("--budget is a kv-budget flag", "--scenario kv-budget")),
]


@pytest.mark.parametrize("name,argv,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name: str, argv: list[str], fragments: tuple[str, ...],
                                                         corpus_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(corpus_dir)
    before = snapshot(corpus_dir)
    code = main(argv)
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert code == 2, (code, out.err, out.out)
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "Traceback" not in out.err + out.out
    text = " ".join(out.err.split())
    for f in fragments:
        assert f in text, text
    # people's words only: no Python class names, API spellings, source paths or temporary files
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", text), text
    for leak in ("tiny=True", "planner/catalog", ".tmp"):
        assert leak not in text, text
    assert snapshot(corpus_dir) == before, "a bad-input case changed the disk"


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 80
    assert len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES if c[1]}
    assert {"plan", "inspect", "diff", "emit", "run", "trace", "profile", "hardware", "calibrate", "export"} <= commands
