"""One dfgl worker process: `python -m runtime.dfgl.worker JOB.json RANK`.

Each round: (1) the round's topology and ratio: the plan's controller online (`online`: the DDPG actor from the
plan with the rule-based fallback, core.dfgl_policy.OnlineController, on the measured state all workers share),
the planned schedule (`schedule`), or the rule controller alone (`rule`); (2) neighbour sampling; (3) halo exchange with the round's neighbours
(isend/irecv of requested node ids, then their features); (4) local training; (5) gossip of the models with
Metropolis weights, measuring the model distances C_ij to the neighbours. Link rates and latencies are
EMULATED in this transport: after the round's communication the worker sleeps until the slowest neighbour
link would have delivered the bytes actually sent (bytes / rate + latency). A peer that does not answer
within the job's timeout ends this worker with a one-line message (exit code 4), never a hang.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from core.dfgl_policy import OnlineController, RuleController, params_from_lists
from core.dfgl_round import RoundCost
from core.p2p_topology import consensus_estimate, metropolis_weights
from runtime.dfgl.model import TwoLayerGnn, flat, load_flat
from runtime.dfgl.sampling import halo_requests, local_subgraph, sample_edges

EXIT_PEER_LOST = 4
EXIT_KILLED = 3


class _Exchange:
    """Point-to-point exchange with the round's neighbours, counting payload bytes per peer."""

    def __init__(self, rank: int, timeout_s: float) -> None:
        self.rank, self.timeout = rank, datetime.timedelta(seconds=timeout_s)
        self.bytes_in: dict[int, int] = {}
        self.bytes_out = 0

    def swap(self, peers: list[int], out: dict[int, torch.Tensor], shapes: dict[int, tuple], dtype: torch.dtype,
             count: bool = True) -> dict[int, torch.Tensor]:
        """Send out[j] to every peer j and receive a tensor of shapes[j] from it (all posted, then waited)."""
        works, got = [], {}
        for j in peers:
            got[j] = torch.empty(shapes[j], dtype=dtype)
            works.append(dist.irecv(got[j], src=j))
        for j in peers:
            works.append(dist.isend(out[j].contiguous(), dst=j))
            if count:
                self.bytes_out += out[j].numel() * out[j].element_size()
        for w in works:
            w.wait(self.timeout)
        if count:
            for j in peers:
                self.bytes_in[j] = self.bytes_in.get(j, 0) + got[j].numel() * got[j].element_size()
        return got


def main(job_path: str, rank: int) -> int:
    torch.set_num_threads(1)
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    m = len(job["workers"])
    out_dir = Path(job["out_dir"])
    data = np.load(job["graph_file"])
    x = torch.from_numpy(data["x"])
    y = torch.from_numpy(data["y"])
    edge_index = torch.from_numpy(data["edge_index"])
    part = torch.from_numpy(data["part"])
    train_mask = torch.from_numpy(data["train_mask"])
    test_mask = torch.from_numpy(data["test_mask"])
    tr = job["training"]
    torch.manual_seed(job["seed"])             # every worker starts from the same model
    model = TwoLayerGnn(x.shape[1], tr["hidden"], int(y.max()) + 1, tr["layer"])
    opt = torch.optim.Adam(model.parameters(), lr=tr["lr"])
    timeout_s = float(job["timeout_s"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{job['port']}", rank=rank, world_size=m,
                            timeout=datetime.timedelta(seconds=timeout_s))
    local = (part == rank).nonzero().view(-1)
    gen = torch.Generator().manual_seed(job["seed"] * 1000 + rank)
    rule = online = cost = None
    rp = job["rule"]
    if job["controller"] in ("rule", "online"):
        rule = RuleController(rp["degree"], rp["base_ratio"], rp["r_min"], rp["c_max"],
                              np.asarray(job["halo"]), np.asarray(job["local_edges"]))
    if job["controller"] == "online":
        # link-rate estimates start at the rates the plan was given for round 0, then follow measured link times
        online = OnlineController(params_from_lists(job["actor"]), rule, rp["degree"], rp["r_min"], rp["c_max"],
                                  np.asarray(job["rounds"][0]["rate_Bps"], float))
        cost = RoundCost.from_record(job["round_cost"])
        rule = None
    consensus = 0.0
    log = out_dir / f"worker{rank}.jsonl"
    kill = job.get("kill")
    with log.open("w", encoding="utf-8") as fh:
        for k, rnd in enumerate(job["rounds"]):
            if kill and kill[0] == rank and kill[1] == k:
                os._exit(EXIT_KILLED)
            t0 = time.perf_counter()
            rate = np.asarray(rnd["rate_Bps"])
            lat = np.asarray(rnd["latency_s"])
            allowed = (rate > 0) & (rate.T > 0)
            np.fill_diagonal(allowed, False)
            by, online_pred = job["controller"], None
            if online is not None:
                adj, ratios, by = online.act(allowed)
                # predicted with the rates the controller believed when it chose
                online_pred = cost.round_time_and_bytes(adj, ratios, np.where(allowed, online.rate_Bps, 0.0), lat)
            elif rule is not None:
                adj, ratios = rule.act(consensus, rate, allowed)
            else:
                adj = np.zeros((m, m), dtype=np.int8)
                for a, b in rnd["links"]:
                    adj[a, b] = adj[b, a] = 1
                ratios = np.asarray(rnd["ratios"])
            peers = [int(j) for j in np.flatnonzero(adj[rank])]
            ex = _Exchange(rank, timeout_s)
            # (2) sampling; (3) halo exchange: sizes, ids, then features
            edges = sample_edges(edge_index, part, rank, float(ratios[rank]), set(peers), gen)
            req = halo_requests(edges, part, rank)
            want = {j: req.get(j, torch.empty(0, dtype=torch.int64)) for j in peers}
            t_comm = time.perf_counter()
            sizes = ex.swap(peers, {j: torch.tensor([want[j].numel()]) for j in peers}, {j: (1,) for j in peers},
                            torch.int64, count=False)
            asked = ex.swap(peers, want, {j: (int(sizes[j][0]),) for j in peers}, torch.int64, count=False)
            feats = ex.swap(peers, {j: x[asked[j]] for j in peers},
                            {j: (want[j].numel(), x.shape[1]) for j in peers}, torch.float32)
            comm_s = time.perf_counter() - t_comm
            # (4) local training on local nodes + the received halo
            halo_ids = torch.cat([want[j] for j in peers]) if peers else torch.empty(0, dtype=torch.int64)
            halo_x = torch.cat([feats[j] for j in peers]) if peers else torch.empty(0, x.shape[1])
            nodes = torch.cat([local, halo_ids])
            sub_x = torch.cat([x[local], halo_x])
            sub_e = local_subgraph(edges, nodes, x.shape[0])
            n_local = local.numel()
            tmask = train_mask[local]
            model.train()
            loss_v = train_err = 0.0
            for _ in range(tr["local_steps"]):
                opt.zero_grad()
                out = model(sub_x, sub_e)[:n_local]
                loss = torch.nn.functional.cross_entropy(out[tmask], y[local][tmask])
                loss.backward()
                opt.step()
                loss_v = float(loss.detach())
                train_err = float((out[tmask].argmax(1) != y[local][tmask]).float().mean())
            # (5) gossip with Metropolis weights; C_ij to every neighbour
            w_own = flat(model)
            if job.get("log_models"):
                np.save(out_dir / f"model_r{k}_w{rank}.npy", w_own.numpy())
            t_g = time.perf_counter()
            theirs = ex.swap(peers, {j: w_own for j in peers}, {j: tuple(w_own.shape) for j in peers}, torch.float32)
            comm_s += time.perf_counter() - t_g
            wm = metropolis_weights(adj)
            mixed = wm[rank, rank] * w_own
            dists = {}
            norm = float(w_own.norm()) or 1.0
            for j in peers:
                mixed = mixed + wm[rank, j] * theirs[j]
                dists[j] = float((w_own - theirs[j]).norm())
            load_flat(model, mixed)
            # emulated links: the slowest neighbour delivers its bytes at the round's rate plus latency
            link_s = {j: ex.bytes_in[j] / rate[rank, j] + lat[rank, j] for j in peers}
            emulated = max(link_s.values(), default=0.0)
            if emulated > comm_s:
                time.sleep(emulated - comm_s)
            # every worker learns the measured distances, link times, training errors and round times (control
            # plane, not counted): the shared consensus estimate and the online controller's state
            row = torch.full((3 * m + 3,), float("nan"), dtype=torch.float64)
            for j, dv in dists.items():
                row[j] = dv
                row[m + 1 + j] = link_s[j]
                row[2 * m + 1 + j] = ex.bytes_in[j]
            row[m], row[3 * m + 1], row[3 * m + 2] = norm, train_err, time.perf_counter() - t0
            rows = [torch.empty(3 * m + 3, dtype=torch.float64) for _ in range(m)]
            dist.all_gather(rows, row)
            gathered = torch.stack(rows).numpy()
            known = gathered[:, :m]
            # relative consensus estimate: mean pairwise distance bound over the mean model norm
            consensus = consensus_estimate(known) / float(gathered[:, m].mean())
            if online is not None:
                online.observe(adj, ratios, gathered[:, 3 * m + 1], consensus, gathered[:, 3 * m + 2],
                               gathered[:, m + 1:2 * m + 1], np.nan_to_num(gathered[:, 2 * m + 1:3 * m + 1]), lat)
            model.eval()
            with torch.no_grad():
                full_e = local_subgraph(edge_index[:, part[edge_index[1]] == rank], nodes, x.shape[0])
                pred = model(sub_x, full_e)[:n_local].argmax(1)
                te = test_mask[local]
                correct = int((pred[te] == y[local][te]).sum())
            rec = {"round": k, "wall_s": time.perf_counter() - t0, "comm_measured_s": comm_s, "emulated_comm_s": emulated,
                   "bytes_in": sum(ex.bytes_in.values()), "bytes_out": ex.bytes_out, "loss": loss_v,
                   "correct": correct, "tested": int(te.sum()), "peers": peers, "ratio": float(ratios[rank]),
                   "distances": {str(j): v for j, v in dists.items()}, "known": known.tolist(),
                   "consensus_estimate": consensus, "train_error": train_err, "controller": by,
                   "links": [[int(i), int(j)] for i, j in zip(*np.nonzero(np.triu(adj, 1)))],
                   "ratios": [float(v) for v in ratios],
                   "online_predicted": None if online_pred is None else {"round_time_s": online_pred[0],
                                                                         "bytes": online_pred[1]}}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
    dist.destroy_process_group()
    return 0


def entry(job_path: str, rank: int) -> None:
    """Process entry point: run, and on a lost peer write one line to `worker<rank>.err` and exit 4."""
    try:
        code = main(job_path, rank)
    except (RuntimeError, dist.DistBackendError) as exc:   # a peer vanished: gloo's timeout or connection reset
        out = Path(json.loads(Path(job_path).read_text(encoding="utf-8"))["out_dir"])
        (out / f"worker{rank}.err").write_text(f"lost a peer ({str(exc).splitlines()[0][:160]})\n", encoding="utf-8")
        code = EXIT_PEER_LOST
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    entry(sys.argv[1], int(sys.argv[2]))
