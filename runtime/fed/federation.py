"""One launcher for the federated runtimes (fed-lora, fed-compress): Flower simulation or deployment on loopback.

A federated job is a server function and client handlers; this module wraps them into a Flower
`ServerApp` and `ClientApp` and runs them in one of two ways:

* ``mode="simulation"`` (the embedded default): in-process through `flwr.simulation.run_simulation`
  (virtual SuperNodes on Ray actors);
* ``mode="deploy"``: as separate processes through Flower's deployment engine on 127.0.0.1: one
  SuperLink and one SuperNode per client, started and stopped here on free ports chosen at run time,
  the job submitted with `flwr run` as a Flower App whose components are `<module>:server_app` and
  `<module>:client_app`. These are the same apps a user would point at real devices.

Configuration travels the way Flower carries it: the *run config* (scalars, the same for every app
of the run) and one *node config* per client (scalars; in deployment it is the SuperNode's
`--node-config`, in simulation the launcher maps the virtual node's `partition-id` to it). The server
learns which node is which client with `identify_nodes` (a `query` round trip answered by every
client app with its node config) and then sends each node its own `ConfigRecord`: never one config
object shared by all clients.

Per-round receipts: the server calls `report_round(run_config, record)`, which appends one JSON line
to the file named by the run config key `rounds-path`; the launcher tails it (and passes each record
to its `on_round` hook) in both modes, because in deployment the server runs in another process. A
server that calls `report_end(run_config)` when it is done lets the deployment launcher notice the end
within a second (otherwise it learns it from `flwr ls`, asked every 10 s).

Device speeds are *emulated* (all clients share this CPU): `sleep_to(target_s, measured_s)` makes a
client's work last the time its hardware profile implies by sleeping the difference; records carry
both the measured and the emulated figure and say which is which.

    apps = FlowerApps(module="runtime.fed.lora_app", server_main=main, client_handlers={"train": train})
    result = run_federation(apps, {"num-rounds": 2}, [{"device-id": "a"}, {"device-id": "b"}],
                            mode="deploy", workdir=Path("build/run"))
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from core.atomic_io import write_text_atomic
from core.errors import PeerError, PlannerError

# Flower sends usage telemetry by default; nothing outside this machine is reachable and a planner run
# should not try. Set before flwr is imported (it reads the variable at import time).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

log = logging.getLogger(__name__)

Scalar = int | float | bool | str
ServerMain = Callable[[Grid, dict[str, Scalar]], None]
ClientHandler = Callable[[Message, dict[str, Scalar], dict[str, Scalar]], Message]
MODES = ("simulation", "deploy")
REPO_ROOT = Path(__file__).resolve().parents[2]
ROUNDS_KEY = "rounds-path"
END_EVENT = "server-finished"
QUERY_IDENTITY = "identity"
MAX_LOCAL_SUPERNODES = 12   # loopback deployment: 3 processes per client (see `check_local_deployment`)


@dataclass(frozen=True)
class FlowerApps:
    """A federated job: `module` defines `server_app` and `client_app` (built with `make_server_app` and
    `make_client_app` from the same functions) so that deployment can load them by name;
    `server_main(grid, run_config)` and `client_handlers[kind](message, run_config, node_config)`
    (kinds: "train", "evaluate", "query") are the functions themselves, used by the simulation."""

    module: str
    server_main: ServerMain
    client_handlers: Mapping[str, ClientHandler]
    client_mods: tuple[Callable[..., Message], ...] = ()   # Flower client mods, outermost first


@dataclass
class FederationResult:
    """What a federation run left: every per-round record (in order), the mode, wall time and logs."""

    mode: str
    rounds: list[dict[str, Any]]
    wall_s: float
    log_dir: Path | None = None
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ configs
def check_scalars(config: Mapping[str, Any], what: str) -> dict[str, Scalar]:
    """Validate a Flower run/node config: string keys without spaces, values int, float, bool or str."""
    out: dict[str, Scalar] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not key or any(c.isspace() or c in "=\"'" for c in key):
            raise PlannerError(f"{what}: key {key!r} cannot be carried by a Flower config",
                               "use keys without spaces, quotes or '='")
        if not isinstance(value, (bool, int, float, str)):
            raise PlannerError(f"{what}: value of '{key}' is a {type(value).__name__}, not a scalar",
                               "Flower configs carry int, float, bool or str values only")
        if isinstance(value, str) and any(c in value for c in "\"'\n"):
            raise PlannerError(f"{what}: value of '{key}' contains a quote or newline",
                               "use plain strings in Flower configs")
        out[key] = value
    return out


def _toml_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def node_config_arg(config: Mapping[str, Scalar]) -> str:
    """The `--node-config` argument of a SuperNode: space-separated `key=value` pairs in TOML syntax."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())


# ------------------------------------------------------------------ apps
def make_server_app(main: ServerMain, run_config: Mapping[str, Scalar] | None = None) -> ServerApp:
    """A ServerApp running `main(grid, run_config)`; the run config comes from the closure (simulation)
    or from the Flower context (deployment, `run_config=None`)."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        cfg = dict(run_config) if run_config is not None else dict(context.run_config)
        main(grid, cfg)

    return app


def _identity_reply(message: Message, node: Mapping[str, Scalar]) -> Message:
    return Message(content=RecordDict({QUERY_IDENTITY: ConfigRecord(dict(node))}), reply_to=message)


def make_client_app(handlers: Mapping[str, ClientHandler], node_configs: Sequence[Mapping[str, Scalar]] | None = None,
                    run_config: Mapping[str, Scalar] | None = None,
                    mods: Sequence[Callable[..., Message]] = ()) -> ClientApp:
    """A ClientApp dispatching to `handlers[kind](message, run_config, node_config)`.

    Simulation passes `node_configs` (one per virtual node, picked by its `partition-id`) and
    `run_config`; deployment passes neither and the apps read both from the Flower context. A `query`
    message whose config record is named `identity` is answered with the node config (see
    `identify_nodes`); other queries go to `handlers["query"]`. `mods` are Flower client mods
    (`mod(message, context, call_next)`), applied around every handler.
    """
    app = ClientApp(mods=list(mods))

    def configs(context: Context) -> tuple[dict[str, Scalar], dict[str, Scalar]]:
        cfg = dict(run_config) if run_config is not None else dict(context.run_config)
        node = dict(context.node_config)
        if node_configs is not None:
            pid = int(node["partition-id"])
            node = {**node, **dict(node_configs[pid])}
        return cfg, node

    def register(kind: str, decorator: Callable[[], Callable[[Callable[..., Message]], Any]]) -> None:
        handler = handlers.get(kind)

        @decorator()
        def _handle(message: Message, context: Context) -> Message:
            cfg, node = configs(context)
            if kind == "query" and QUERY_IDENTITY in message.content.config_records:
                return _identity_reply(message, node)
            if handler is None:
                raise RuntimeError(f"this client app has no '{kind}' handler")
            return handler(message, cfg, node)

    register("train", app.train)
    register("evaluate", app.evaluate)
    register("query", app.query)
    return app


def identify_nodes(grid: Grid, expected: int, timeout_s: float = 120.0) -> dict[int, dict[str, Scalar]]:
    """Wait until `expected` nodes are connected, then ask each for its node config: {node_id: node_config}."""
    deadline = time.monotonic() + timeout_s
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < expected:
        if time.monotonic() > deadline:
            raise PeerError(f"only {len(nodes)} of {expected} clients connected within {timeout_s:.0f} s",
                            "check the SuperNode logs or raise the timeout")
        time.sleep(0.2)
        nodes = sorted(grid.get_node_ids())
    msgs = [Message(content=RecordDict({QUERY_IDENTITY: ConfigRecord({})}), message_type="query", dst_node_id=n)
            for n in nodes]
    replies = list(grid.send_and_receive(msgs, timeout=max(1.0, deadline - time.monotonic())))
    out: dict[int, dict[str, Scalar]] = {}
    for r in replies:
        if r.has_error():
            raise PeerError(f"client node {r.metadata.src_node_id} failed to identify itself ({r.error.reason})",
                            "check the client logs")
        out[int(r.metadata.src_node_id)] = dict(r.content[QUERY_IDENTITY])
    if len(out) < expected:
        raise PeerError(f"only {len(out)} of {expected} clients answered the identity query",
                        "check the SuperNode logs or raise the timeout")
    return out


# ------------------------------------------------------------------ receipts and emulation
def report_round(run_config: Mapping[str, Scalar], record: Mapping[str, Any]) -> None:
    """Append one JSON record to the run's rounds file (`rounds-path` in the run config); no-op without it."""
    path = run_config.get(ROUNDS_KEY)
    if not path:
        return
    line = json.dumps(record, sort_keys=True, default=float)
    with open(str(path), "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()


def report_end(run_config: Mapping[str, Scalar]) -> None:
    """Mark the end of the server's work in the rounds file (lets the deployment launcher stop polling early)."""
    report_round(run_config, {END_EVENT: True})


def read_rounds(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of a rounds file (a partial last line is ignored)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def sleep_to(target_s: float, measured_s: float) -> float:
    """Emulation: sleep so that work measured at `measured_s` lasts `target_s`; returns the seconds slept
    (0 when this CPU was already slower than the emulated device)."""
    gap = float(target_s) - float(measured_s)
    if gap > 0:
        time.sleep(gap)
        return gap
    return 0.0


class _RoundTail:
    """Follows a rounds file from another thread and hands each new record to `on_round`."""

    def __init__(self, path: Path, on_round: Callable[[dict[str, Any]], None] | None) -> None:
        self.path, self.on_round, self.seen = path, on_round, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def poll(self) -> None:
        records = [r for r in read_rounds(self.path) if END_EVENT not in r]
        for rec in records[self.seen:]:
            if self.on_round is not None:
                try:
                    self.on_round(rec)
                except Exception:  # a failing hook must not kill the run; it is logged
                    log.exception("on_round hook failed")
        self.seen = max(self.seen, len(records))

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.poll()

    def __enter__(self) -> "_RoundTail":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()


# ------------------------------------------------------------------ launcher
def run_federation(apps: FlowerApps, run_config: Mapping[str, Scalar], node_configs: Sequence[Mapping[str, Scalar]],
                   *, mode: str = "simulation", workdir: Path,
                   on_round: Callable[[dict[str, Any]], None] | None = None,
                   timeout_s: float = 900.0, sim_cpus: int | None = None, verbose: bool | None = None) -> FederationResult:
    """Run the job with one client per entry of `node_configs`; returns the per-round records.

    The engine's logs go to files under `workdir/logs` (named in every error), or also to this terminal
    with `verbose` (default: when this process logs at INFO, i.e. the CLI's -v).

    `workdir` receives the rounds file, logs and (deploy) the Flower App project and Flower home, so
    nothing outside it is touched. Raises `PeerError` when the federation fails or times out, with the
    log to read; processes started here are always stopped (also on Ctrl-C).
    """
    if mode not in MODES:
        raise PlannerError(f"unknown federation mode '{mode}'", f"use one of {', '.join(MODES)}")
    if not node_configs:
        raise PlannerError("a federation needs at least one client", "give at least one node config")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rounds_path = workdir / "rounds.jsonl"
    if rounds_path.exists():
        rounds_path.unlink()
    cfg = check_scalars({**run_config, ROUNDS_KEY: str(rounds_path), "num-clients": len(node_configs)}, "run config")
    nodes = [check_scalars(n, f"node config {i}") for i, n in enumerate(node_configs)]
    if verbose is None:
        verbose = logging.getLogger().isEnabledFor(logging.INFO)
    t0 = time.perf_counter()
    with _RoundTail(rounds_path, on_round):
        if mode == "simulation":
            result = _run_simulation(apps, cfg, nodes, workdir, sim_cpus, timeout_s, verbose)
        else:
            result = _run_deployment(apps, cfg, nodes, workdir, timeout_s)
    result.rounds = [r for r in read_rounds(rounds_path) if END_EVENT not in r]
    result.wall_s = time.perf_counter() - t0
    return result


def run_simulation_here(apps: FlowerApps, cfg: dict[str, Scalar], nodes: list[dict[str, Scalar]], cpus: int,
                        verbose: bool = False) -> None:
    """`flwr.simulation.run_simulation` in this process (called by `runtime/fed/simulation_process.py`)."""
    from flwr.simulation import run_simulation

    server = make_server_app(apps.server_main, cfg)
    client = make_client_app(apps.client_handlers, nodes, cfg, apps.client_mods)
    # Ray's own output (worker logs, deprecation banners) stays in this process's log unless verbose.
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False,
                             "log_to_driver": bool(verbose), "logging_level": logging.INFO if verbose else logging.ERROR}}
    try:
        run_simulation(server_app=server, client_app=client, num_supernodes=len(nodes), backend_config=backend,
                       verbose_logging=bool(verbose))
    except PlannerError:
        raise
    except Exception as exc:  # Flower wraps server-side failures in RuntimeError
        cause = exc.__cause__ or exc
        raise PeerError(f"the federated simulation failed ({cause.__class__.__name__}: {cause})",
                        "rerun with --debug for the traceback") from exc


def _run_simulation(apps: FlowerApps, cfg: dict[str, Scalar], nodes: list[dict[str, Scalar]], workdir: Path,
                    sim_cpus: int | None, timeout_s: float, verbose: bool) -> FederationResult:
    """The simulation in a child process group (see `simulation_process.py`): Ctrl-C stops it within seconds.

    Its output (Flower's and Ray's logs) goes to `workdir/logs/simulation.log`, or to this terminal with `verbose`.
    """
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cpus = int(sim_cpus or max(1, min(len(nodes), os.cpu_count() or 1)))
    error_path = log_dir / "simulation.error.json"
    if error_path.exists():
        error_path.unlink()
    spec = log_dir / "simulation.spec.json"
    write_text_atomic(spec, json.dumps({"module": apps.module, "run_config": cfg, "node_configs": nodes, "cpus": cpus,
                                        "verbose": verbose, "error_path": str(error_path)}, indent=1) + "\n")
    env = dict(os.environ)
    env.update({"FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), "RAY_DEDUP_LOGS": "0",
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])})
    log_path = log_dir / "simulation.log"
    argv = [sys.executable, "-m", "runtime.fed.simulation_process", str(spec)]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=None if verbose else out, stderr=None if verbose else subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=log_dir, start_new_session=True)
    procs = _Processes(log_dir, env)
    procs.procs.append(("simulation", proc))
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise PeerError(f"the federated simulation did not finish within {timeout_s:.0f} s", f"read {log_path}")
            time.sleep(0.2)
    finally:
        procs.stop_all(grace_s=3.0)
    if proc.returncode != 0:
        if error_path.exists():
            err = json.loads(error_path.read_text(encoding="utf-8"))
            raise PeerError(err["problem"], f"{err['fix']}; the engine's log is {log_path}")
        raise PeerError(f"the federated simulation exited with code {proc.returncode}", f"read {log_path}")
    return FederationResult(mode="simulation", rounds=[], wall_s=0.0, log_dir=log_dir)


def kept_run_directory(prefix: str) -> Path:
    """A fresh folder for one run's job, rounds and engine logs (system temp dir). The caller removes it
    after a successful run and keeps it when the run fails, so the logs an error names stay on disk."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=prefix))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bound to 0 and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_app_project(project: Path, module: str, cfg: Mapping[str, Scalar]) -> None:
    """A Flower App project whose components live in `module` (importable through PYTHONPATH)."""
    lines = ["[build-system]", 'requires = ["hatchling"]', 'build-backend = "hatchling.build"', "",
             "[project]", 'name = "planner-federation"', 'version = "1.0.0"',
             'description = "Federated job emitted by planner"', 'license = "Apache-2.0"', "dependencies = []", "",
             "[tool.flwr.app]", 'publisher = "planner"', "", "[tool.flwr.app.components]",
             f'serverapp = "{module}:server_app"', f'clientapp = "{module}:client_app"', "",
             "[tool.flwr.app.config]"]
    lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in cfg.items()]
    write_text_atomic(project / "pyproject.toml", "\n".join(lines) + "\n")


class _Processes:
    """Processes started by the launcher, each in its own process group, stopped in reverse order."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir, self.env = log_dir, env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env, cwd=self.log_dir, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise PeerError(f"{name} exited with code {proc.returncode}",
                                f"read {self.log_dir / (name + '.log')}")

    def stop_all(self, grace_s: float = 8.0) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # The group may hold children (superexec, app processes) even after the leader exited.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                log.warning("process %d did not exit after SIGKILL", proc.pid)
        self._sweep()

    def _sweep(self, timeout_s: float = 10.0) -> None:
        """Stop what the process groups did not hold: app processes a SuperNode starts in sessions of their
        own, found by their working directory (inherited from the launcher's log folder; Linux /proc)."""
        deadline = time.monotonic() + timeout_s
        sig = signal.SIGTERM
        while True:
            left = _processes_under(self.log_dir)
            if not left or time.monotonic() > deadline:
                break
            for pid in left:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.2)
            sig = signal.SIGKILL
        if left:
            log.warning("processes %s under %s did not exit", sorted(left), self.log_dir)


def _processes_under(folder: Path) -> set[int]:
    """Live processes (not zombies) whose working directory lies under `folder`, other than this one."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return set()
    root = str(folder.resolve())
    out = set()
    for p in proc_root.iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cwd = str((p / "cwd").resolve())
            state = (p / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and (cwd == root or cwd.startswith(root + os.sep)):
            out.add(int(p.name))
    return out


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise PlannerError(f"Flower's `{name}` is not installed next to {sys.executable}",
                           "install flwr (pip install 'flwr[simulation]') in this environment")
    return str(path)


def _wait_http(url: str, proc_check: Callable[[], None], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc_check()
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 (loopback only)
                if resp.status < 500:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise PeerError(f"{what} did not answer at {url} within {timeout_s:.0f} s", "read its log in the run directory")


def _flwr(args: list[str], env: dict[str, str], timeout_s: float, log_dir: Path) -> dict[str, Any]:
    try:
        out = subprocess.run([_bin("flwr"), *args, "--format", "json"], capture_output=True, text=True, env=env,
                             timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"`flwr {args[0]}` did not answer within {timeout_s:.0f} s (the machine may be overloaded)",
                        f"read {log_dir / 'superlink.log'}") from exc
    text = out.stdout.strip()
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        data = {}
    if out.returncode != 0 or not data.get("success", False):
        detail = (data.get("error-message") or out.stderr.strip().splitlines()[-1:] or [text[-200:]])
        raise PeerError(f"`flwr {' '.join(args[:1])}` failed ({detail if isinstance(detail, str) else detail[0]})",
                        f"read {log_dir / 'superlink.log'}")
    return data


def check_local_deployment(num_clients: int) -> None:
    """Refuse a loopback deployment larger than this machine can hold, before starting any process.

    Flower's deployment engine runs one SuperNode per node, and each SuperNode starts a SuperExec and a
    ClientApp process (about 130 MB each, measured: gen:50 started 79+ processes and used 10 GB on 2
    cores until `flwr ls` timed out). A node cannot host several clients' state without changing
    the apps, so the number of local SuperNodes is capped instead.
    """
    if num_clients > MAX_LOCAL_SUPERNODES:
        raise PlannerError(
            f"--deploy starts one Flower SuperNode (3 processes) per client on this machine, and this run has "
            f"{num_clients} clients; at most {MAX_LOCAL_SUPERNODES} run locally",
            f"drop --deploy for the simulation (any size), or plan with --clients gen:{MAX_LOCAL_SUPERNODES} "
            "(or fewer devices) to deploy locally")


def _run_deployment(apps: FlowerApps, cfg: dict[str, Scalar], nodes: list[dict[str, Scalar]], workdir: Path,
                    timeout_s: float) -> FederationResult:
    check_local_deployment(len(nodes))
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    home = workdir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    project = workdir / "flower-app"
    project.mkdir(parents=True, exist_ok=True)
    _write_app_project(project, apps.module, cfg)
    port = free_port()
    write_text_atomic(home / "config.toml", "\n".join(
        ["[superlink]", 'default = "planner"', "", "[superlink.planner]", f'address = "127.0.0.1:{port}"',
         "insecure = true", ""]))
    env = dict(os.environ)
    env.update({"FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]),
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
                "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
    procs = _Processes(log_dir, env)
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if previous is not None:
        signal.signal(signal.SIGTERM, on_term)
    run_id: str | None = None
    try:
        procs.start("superlink", [_bin("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
                                  "--disable-runtime-dependency-installation"])
        _wait_http(f"http://127.0.0.1:{port}/health", procs.check_alive, 60, "the SuperLink")
        for i, node in enumerate(nodes):
            full = {**node, "partition-id": i, "num-partitions": len(nodes)}
            procs.start(f"supernode-{i}", [_bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                                           "--port", str(free_port()), "--node-config", node_config_arg(full)])
        procs.check_alive()
        started = _flwr(["run", str(project), "planner"], env, timeout_s=120, log_dir=log_dir)
        run_id = str(started.get("run-id"))
        deadline = time.monotonic() + timeout_s
        status = ""
        polls = 0
        # `flwr ls` is a Python process: ask it every 10 s as a watchdog, and every second once the server
        # has written its end record (see `report_end`) so the run's final status is picked up promptly.
        while time.monotonic() < deadline:
            time.sleep(1.0)
            procs.check_alive()
            polls += 1
            ended = any(END_EVENT in r for r in read_rounds(Path(str(cfg[ROUNDS_KEY]))))
            if not ended and polls % 10:
                continue
            runs = _flwr(["ls", "--run-id", run_id], env, timeout_s=60, log_dir=log_dir).get("runs", [])
            status = str(runs[0].get("status", "")) if runs else ""
            if status.startswith("finished"):
                break
        else:
            raise PeerError(f"the federated run did not finish within {timeout_s:.0f} s (status '{status}')",
                            f"read the logs in {log_dir}")
        if status != "finished:completed":
            raise PeerError(f"the federated run ended with status '{status}'",
                            f"read {log_dir / 'superlink.log'} and the supernode logs")
        return FederationResult(mode="deploy", rounds=[], wall_s=0.0, log_dir=log_dir, run_id=run_id)
    except KeyboardInterrupt:
        if run_id is not None:
            try:
                subprocess.run([_bin("flwr"), "stop", run_id], env=env, timeout=20, capture_output=True)
            except (subprocess.SubprocessError, OSError):
                pass
        raise
    finally:
        procs.stop_all()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
