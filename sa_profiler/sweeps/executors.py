"""Who runs a sweep's workloads: this process (`LocalExecutor`) or a Ray cluster (`RayExecutor`).

An executor takes workloads (`submit`) and hands back finished ones (`wait`); the sweep loop
decides what to submit and writes every row itself, so both give the same table. Ray is an
optional extra (`pip install -e ".[ray]"` in the repository), imported only when asked for.

On Ray each workload is one task, never retried by Ray (a lost worker is a row, not a silent
re-run). Simulated and CPU-measured workloads are plain tasks asking for one CPU. Measured GPU
workloads are tasks of a `Measurer` actor: one per GPU of the kind (Ray's `accelerator_type`
for a target `cuda:<KIND>`: T4, A100, H100, ...), each holding its card (`num_gpus=1`) for the
sweep, so torch and CUDA start once per card instead of once per row, no idle process keeps a
context on a card another one measures, and a process never sees a second device.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from sa_profiler.engine.workload import Record, Workload
from sa_profiler.question import Question
from sa_profiler.sweeps.rows import LOST, run_workload

RAY_INSTALL = 'pip install -e ".[ray]" in the repository'
CUDA_KIND = "cuda:"  # target key prefix: measured on a cluster GPU of that Ray accelerator type
CONTEXT_LOST = "CUDA context lost"  # what measure says when a kernel fault left the process unusable


class ExecutorError(ValueError):
    """An executor that cannot start or place the grid (one line for the user)."""


class LocalExecutor:
    """One workload at a time, in this process."""

    slots = 1

    def __init__(self):
        self._next: tuple | None = None

    def describe(self) -> dict:
        return {"name": "local"}

    def submit(self, w: Workload, tag, question: Question) -> None:
        self._next = (tag, w, question)

    def wait(self) -> list[tuple[object, Workload, Record]]:
        tag, w, question = self._next
        self._next = None
        return [(tag, w, run_workload(w, question))]

    def close(self) -> None:
        pass


def import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def _run_remote(w: Workload, question: Question) -> Record:
    return run_workload(w, question)


def _probe_gpu():
    """The GPU a task landed on (its catalogue rates where torch's name is known)."""
    from sa_profiler.targets import gpus

    return gpus.local()


@dataclass
class ClusterGPU:
    kind: str  # Ray's accelerator type
    count: int  # GPUs of this kind, over the alive nodes
    gpu: object = None  # gpus.GPU, once probed


def gpu_kinds(nodes: list[dict]) -> dict[str, int]:
    """GPU kinds -> count over the alive nodes of `ray.nodes()`. A node whose accelerator type
    Ray did not detect counts as kind 'GPU'."""
    kinds: dict[str, int] = {}
    for node in nodes:
        res = node.get("Resources", {})
        if not node.get("Alive", True) or not res.get("GPU"):
            continue
        named = [k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")]
        kind = named[0] if named else "GPU"
        kinds[kind] = kinds.get(kind, 0) + int(res["GPU"])
    return kinds


class RayExecutor:
    """Workloads as Ray tasks; results come back as tasks finish."""

    def __init__(self, address: str | None = None, in_flight: int | None = None, init_kwargs: dict | None = None,
                 fn=None):
        """`address`: an existing cluster ("auto", "HOST:PORT"); None starts one here unless
        Ray is already initialised in this process. `fn(workload, question) -> Record` is what
        a task runs (default: the sweep's runner)."""
        token_auth(address)  # before Ray is imported: it reads the mode when it loads
        ray = self.ray = import_ray()
        if not ray.is_initialized():
            check_address(address)
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False, **(init_kwargs or {}))
            except (ConnectionError, RuntimeError, ValueError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                hint = ("; if the cluster uses token authentication, give its token (RAY_AUTH_TOKEN or "
                        "~/.ray/auth_token)" if address not in (None, "auto", "local") else "")
                raise ExecutorError(f"cannot connect to the Ray cluster at {address or 'a new local one'}: "
                                    f"{first}{hint}") from None
        res = ray.cluster_resources()
        self.cpus, self.gpus = int(res.get("CPU", 0)), int(res.get("GPU", 0))
        self.slots = in_flight or max(4, 2 * (self.cpus + self.gpus))
        self._fn = fn or _run_remote
        self._task = ray.remote(max_retries=0)(self._fn)
        self._actor = ray.remote(max_restarts=0, max_task_retries=0)(Measurer)
        self._pools: dict[str, _Pool] = {}  # GPU kind -> its measuring processes
        self._running: dict = {}  # ObjectRef -> (tag, workload, question, (kind, actor) or None)

    def describe(self) -> dict:
        return {"name": "ray", "cpus": self.cpus, "gpus": self.gpus, "kinds": gpu_kinds(self.ray.nodes()),
                "ray": self.ray.__version__}

    def kinds(self, probe: bool = True, timeout: float = 300.0) -> list[ClusterGPU]:
        """The cluster's GPU kinds; with `probe`, one task on each reports its card."""
        found = [ClusterGPU(k, n) for k, n in sorted(gpu_kinds(self.ray.nodes()).items())]
        if probe and found:
            remote = self.ray.remote(max_retries=1, num_gpus=1, max_calls=1)(_probe_gpu)
            refs = [remote.options(**_placement(c.kind)).remote() for c in found]
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout)
            if len(ready) < len(refs):
                raise ExecutorError(f"the cluster's GPU workers did not answer within {timeout:.0f} s")
            for c, ref in zip(found, refs):
                try:
                    c.gpu = self.ray.get(ref)
                except self.ray.exceptions.RayError as err:
                    cause = getattr(err, "cause", None) or err
                    raise ExecutorError(f"a {c.kind} worker of the Ray cluster could not report its card: "
                                        f"{type(cause).__name__}: {_first_line(cause)}") from None
        return found

    def submit(self, w: Workload, tag, question: Question) -> None:
        if question.engine == "measure" and w.target != "cpu":
            kind = w.target[len(CUDA_KIND):] if w.target.startswith(CUDA_KIND) else "GPU"
            self._pool(kind).backlog.append((tag, w, question))
            self._dispatch(kind)
            return
        ref = self._task.options(num_cpus=1).remote(w, question)
        self._running[ref] = (tag, w, question, None)

    def _pool(self, kind: str) -> "_Pool":
        if kind not in self._pools:
            n = self._capacity(kind)
            if n == 0:
                raise ExecutorError(f"the Ray cluster has no {kind} GPU to measure on")
            self._pools[kind] = _Pool([self._new_actor(kind) for _ in range(n)])
        return self._pools[kind]

    def _capacity(self, kind: str) -> int:
        kinds = gpu_kinds(self.ray.nodes())
        return sum(kinds.values()) if kind == "GPU" else kinds.get(kind, 0)

    def _new_actor(self, kind: str):
        return self._actor.options(num_cpus=1, **_placement(kind)).remote(self._fn)

    def _dispatch(self, kind: str) -> None:
        pool = self._pools[kind]
        while pool.backlog and pool.idle:
            actor = pool.idle.pop()
            tag, w, question = pool.backlog.popleft()
            ref = actor.run.remote(w, question)
            self._running[ref] = (tag, w, question, (kind, actor))

    def wait(self) -> list[tuple[object, Workload, Record]]:
        ray = self.ray
        out = []
        refs = list(self._running)
        if refs:
            ready, rest = ray.wait(refs, num_returns=1)
            if rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            for ref in ready:
                tag, w, question, seat = self._running.pop(ref)
                rec = self._result(ref, w, "measured" if question.engine == "measure" else "simulated")
                if seat is not None:
                    kind, actor = seat
                    if rec.status == "error" and (rec.message.startswith(LOST) or CONTEXT_LOST in rec.message):
                        self._replace(kind, actor)  # dead, or alive with an unusable CUDA context
                    else:
                        self._pools[kind].idle.append(actor)
                    self._dispatch(kind)
                out.append((tag, w, rec))
        for kind, pool in self._pools.items():  # a kind with no card left: its waiting rows are lost
            running = any(seat is not None and seat[0] == kind for *_, seat in self._running.values())
            if pool.backlog and not pool.idle and not running:
                while pool.backlog:
                    tag, w, question = pool.backlog.popleft()
                    out.append((tag, w, Record(w, status="error", source="measured",
                                               message=f"{LOST}: no {kind} GPU left in the Ray cluster")))
        return out

    def _replace(self, kind: str, dead) -> None:
        """A measuring process died: start another on a card of the kind, while the cluster
        still has as many cards as the pool has processes."""
        pool = self._pools[kind]
        try:
            self.ray.kill(dead, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        pool.size -= 1
        if pool.size < self._capacity(kind):
            pool.add(self._new_actor(kind))

    def _result(self, ref, w: Workload, source: str) -> Record:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # our code raised inside the task: not retried
            cause = err.cause if getattr(err, "cause", None) is not None else err
            return Record(w, status="error", message=f"{type(cause).__name__}: {_first_line(cause)}"[:400],
                          source=source)
        except ray.exceptions.RayError as err:  # the worker or its node died, or was OOM-killed
            return Record(w, status="error", message=f"{LOST}: {type(err).__name__}: {_first_line(err)}"[:400],
                          source=source)

    def close(self) -> None:
        for ref, (*_, seat) in list(self._running.items()):  # an interrupted sweep: stop what it started
            if seat is None:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone
                    pass
        for pool in self._pools.values():  # give the cards back
            for actor in pool.all:
                try:
                    self.ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
        self._running.clear()
        self._pools.clear()


class Measurer:
    """A process that holds one GPU for a sweep and measures workloads on it."""

    def __init__(self, fn):
        self.fn = fn

    def run(self, w: Workload, question: Question) -> Record:
        return self.fn(w, question)


class _Pool:
    """The measuring processes of one GPU kind, and the workloads waiting for one."""

    def __init__(self, actors: list):
        self.all = list(actors)
        self.idle = list(actors)
        self.size = len(actors)  # processes alive or starting
        self.backlog: deque = deque()

    def add(self, actor) -> None:
        self.all.append(actor)
        self.idle.append(actor)
        self.size += 1


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT that does not answer (Ray itself waits minutes for it)."""
    import socket

    if address in (None, "", "auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"cannot read --ray-address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ExecutorError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}; "
                            "is `ray start --head` running there?") from None


def token_auth(address: str | None) -> None:
    """Joining a cluster by HOST:PORT, send the Ray token where one is at hand, as Ray does
    itself for `auto`: clusters started by `ray start` (Ray >= 2.5x) require it by default, and a
    cluster without authentication ignores it."""
    import os
    from pathlib import Path

    if address in (None, "", "auto", "local") or os.environ.get("RAY_AUTH_MODE"):
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(path):
        os.environ["RAY_AUTH_MODE"] = "token"


def _placement(kind: str) -> dict:
    opts = {"num_gpus": 1}
    if kind and kind != "GPU":
        opts["accelerator_type"] = kind
    return opts


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("ray::", "Traceback")):
            return line
    return text.splitlines()[0] if text else ""


def cluster_gpu(c: ClusterGPU):
    """The probed card of one GPU kind of the cluster, keyed `cuda:<kind>` (a measured target)."""
    return replace(c.gpu, key=f"{CUDA_KIND}{c.kind}", local=False)
