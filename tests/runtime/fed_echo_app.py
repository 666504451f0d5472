"""A minimal federated job for the launcher tests: the server sends every node its own config and
collects what each client saw (its node config and the per-node message), round by round."""
from __future__ import annotations

import os

from flwr.app import ConfigRecord, Message, RecordDict

from runtime.fed.federation import (FlowerApps, identify_nodes, make_client_app, make_server_app, report_end,
                                    report_round)


def server_main(grid, run_config):
    nodes = identify_nodes(grid, int(run_config["num-clients"]), timeout_s=60)
    for rnd in range(1, int(run_config["num-rounds"]) + 1):
        msgs = []
        for node_id, node in sorted(nodes.items()):
            cfg = ConfigRecord({"round": rnd, "for-device": str(node["device-id"]),
                                "value": int(node["value"]) * rnd})
            msgs.append(Message(content=RecordDict({"config": cfg}), message_type="train", dst_node_id=node_id))
        replies = list(grid.send_and_receive(msgs, timeout=60))
        clients = {}
        for r in replies:
            if r.has_error():
                raise RuntimeError(r.error.reason)
            m = r.content["echo"]
            clients[str(m["device-id"])] = dict(m)
        report_round(run_config, {"round": rnd, "clients": clients})
    report_end(run_config)


def client_train(message, run_config, node):
    cfg = message.content["config"]
    echo = ConfigRecord({"device-id": str(node["device-id"]), "for-device": str(cfg["for-device"]),
                         "value": int(cfg["value"]), "tag": str(run_config.get("tag", "")), "pid": os.getpid()})
    return Message(content=RecordDict({"echo": echo}), reply_to=message)


APPS = FlowerApps(module=__name__, server_main=server_main, client_handlers={"train": client_train})
server_app = make_server_app(server_main)
client_app = make_client_app({"train": client_train})
