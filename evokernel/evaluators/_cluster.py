"""The Ray cluster's lifecycle: join one by address, or start the embedded local
instance once (on loopback whatever the order of imports, sized to this machine,
quiet, without dashboard, shut down at exit, ended by a watchdog if this process is
killed, shut down with a ``ClusterError`` if it loses its raylet or head); and the
runner resources by which nodes offer to time kernels.

evokernel's calls into Ray go through ``wait``/``get`` (bounded, and checking every
half second that the local instance is alive) inside ``using_ray`` (so that the
monitor thread does not shut the instance down under them).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from ..codegen import default_threads
from ..errors import ClusterError, EvokernelError
from ..target import Target, gpu_available

log = logging.getLogger("evokernel")

RESOURCE_PREFIX = "evokernel-runner:"
LOOPBACK = "127.0.0.1"
#: The processes without which the local instance is gone.
VITAL = ("raylet", "gcs_server")
#: How often the local instance's raylet and head are looked at.
MONITOR_SECONDS = 0.5

_lock = threading.RLock()  # held by evokernel's calls into Ray, and by whoever shuts the instance down
_local: "_LocalInstance | None" = None  # the instance this process started, while it is up
_epoch = 0  # counts local instances started (and shut down)
_lost: str | None = None  # why the last instance was lost


def runner_resources(target: "str | Target" = "host") -> dict[str, float]:
    """The custom resource a Ray node offers to time kernels: named after the node's
    own target (its CPU, plus a GPU API such as ``-opencl`` or ``-cuda`` for a node
    with such a device), it serves every target that node can run. Pass it to
    ``ray start --resources`` on the nodes that should run timings.

    >>> sorted(runner_resources("x86-64-linux-avx2"))
    ['evokernel-runner:x86-64-linux-avx2']
    """
    return {RESOURCE_PREFIX + Target.parse(target).string: 1.0}


def local_runner_resources() -> dict[str, float]:
    """The runner resources this machine offers: its CPU's, and one per GPU API
    with a device here (``...-opencl`` where an OpenCL device is found)."""
    resources = runner_resources("host")
    for api in ("opencl", "cuda"):
        if gpu_available(api):
            resources.update(runner_resources(f"host-{api}"))
    return resources


def runner_resource_for(target: Target, offered: dict) -> str | None:
    """The runner resource in ``offered`` (a cluster's resources) of a node that can
    run ``target``, preferring an exact match."""
    names = [n for n in offered if n.startswith(RESOURCE_PREFIX) and offered[n] >= 1]
    exact = RESOURCE_PREFIX + target.string
    if exact in names:
        return exact
    return next((n for n in sorted(names) if target.runs_on(Target(n[len(RESOURCE_PREFIX):]))), None)


def reachable(address: str, timeout: float = 5.0, what: str = "a Ray cluster address") -> str:
    """``address`` if a Ray head answers there; else an ``EvokernelError`` at once
    (``ray.init`` would retry a dead address for minutes).

    >>> reachable("head", what="--cluster")
    Traceback (most recent call last):
    evokernel.errors.EvokernelError: --cluster takes HOST:PORT (the Ray head's address), got 'head'
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EvokernelError(f"{what} takes HOST:PORT (the Ray head's address), got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise EvokernelError(f"cannot reach a Ray cluster at {address}: {error.strerror or error}") from None
    return address


def ensure_ray(address: str | None = None):
    """Connect to ``address`` (or ``$RAY_ADDRESS``), or start the local instance
    once; returns the ``ray`` module. A Ray this program started itself is used as
    it is."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "auto":
        reachable(address)
    if not address:
        # Ray runs its workers at nice 15, below everything else on the machine; on
        # the embedded instance they do the tuning itself (builds ~17% slower, and
        # timings open to any background process, at 15).
        os.environ.setdefault("RAY_worker_niceness", "0")
        # Where Ray is not imported yet, it then starts every node of this process on
        # loopback by default too (a test cluster, say); the local instance does not
        # depend on it (``loopback_only``).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    with _lock:
        if ray.is_initialized():
            return ray
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        if address:
            with loopback_only() if _on_loopback(address) else contextlib.nullcontext():
                ray.init(address=address, **quiet)
            return ray
        _start_local(ray, quiet)
    return ray


def _on_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _start_local(ray, quiet: dict) -> None:
    """Start the embedded instance on loopback, with a watchdog that ends it if this
    process is killed and a monitor that shuts it down if it loses its raylet."""
    global _local, _epoch
    if _local is not None:  # the program shut the last one down itself: forget it
        _shut_down()
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    watchdog = subprocess.Popen(  # first: it watches Ray start up
        [sys.executable, "-I", str(Path(__file__).with_name("_watchdog.py")), str(me.pid), *map(str, before)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True)
    try:
        with loopback_only():
            ray.init(address="local", num_cpus=default_threads(), resources=local_runner_resources(),
                     _node_ip_address=LOOPBACK, **quiet)
    except BaseException:
        _close_watchdog(watchdog)
        raise
    started = [p for p in me.children() if p.pid not in before and p.pid != watchdog.pid]
    bound = ray.util.get_node_ip_address()
    if bound != LOOPBACK:
        ray.shutdown()
        _close_watchdog(watchdog)
        raise ClusterError(f"the local Ray instance came up on {bound}, not on loopback ({LOOPBACK}): refused, since "
                           "Ray has no authentication. Start a cluster yourself and pass its address to use Ray "
                           "on a network")
    if _epoch == 0:
        atexit.register(shutdown_local_ray)
    _epoch += 1
    _local = _LocalInstance(started, watchdog, ray.get_runtime_context().gcs_address)


@contextlib.contextmanager
def loopback_only():
    """Ray on loopback for what starts or connects inside: a node started here is
    on 127.0.0.1 (every process of it listens there), and an address on 127.0.0.1
    is used as it is. Ray decides a node's address when it starts: the machine's
    network address, unless its cluster mode is off, as Ray keeps it on macOS and
    Windows; it also rewrites 127.0.0.1 in a cluster address to that network
    address. Ray reads the setting from the environment when it is imported, so it
    is set on Ray's module here, for the ``with`` only, whatever the order of
    imports. A multi-node test cluster (``ray.cluster_utils.Cluster``) is made
    inside it with ``node_ip_address="127.0.0.1"`` for every node."""
    from ray._private import ray_constants

    missing = object()  # a Ray without the setting: the check after a start refuses what is not on loopback
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", missing)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved is missing:
            del ray_constants.ENABLE_RAY_CLUSTER
        else:
            ray_constants.ENABLE_RAY_CLUSTER = saved


class _LocalInstance:
    """The processes of the embedded instance: the watchdog ends them if this process
    is killed; a monitor thread notices when the raylet or the head dies (Ray would
    end this process about 15 s later, when it misses the node) and shuts Ray down
    first, unless evokernel is inside a Ray call, which then does it and raises."""

    def __init__(self, started: list[psutil.Process], watchdog: subprocess.Popen, address: str):
        self.vital = [p for p in started if _name(p) in VITAL]
        self.watchdog, self.address = watchdog, address
        lines = []
        for p in started:
            try:
                lines.append(f"{p.pid} {p.create_time()!r}\n")
            except psutil.Error:
                pass
        try:
            watchdog.stdin.write("".join(lines).encode())
            watchdog.stdin.flush()
        except OSError:
            log.warning("the local Ray instance's watchdog is gone: if this process is killed, Ray's processes "
                        "may outlive it")
        self.stop = threading.Event()
        threading.Thread(target=self._monitor, name="evokernel-ray-monitor", daemon=True).start()

    def lost(self) -> str | None:
        """Which vital process of the instance died, or ``None``."""
        for p in self.vital:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                pass
            return f"its {_name(p)} process (pid {p.pid}) died"
        return None

    def _monitor(self) -> None:
        while not self.stop.wait(MONITOR_SECONDS):
            why = self.lost()
            if why is not None and _lock.acquire(blocking=False):
                try:
                    if _local is self and _abandon(why):
                        log.warning("the local Ray instance failed: %s; it was shut down (the next use starts a "
                                    "fresh one)", why)
                finally:
                    _lock.release()
                return

    def close(self) -> None:
        """Stop watching; the watchdog ends what is left of the instance."""
        self.stop.set()
        _close_watchdog(self.watchdog)


def _close_watchdog(watchdog: subprocess.Popen) -> None:
    """Close the watchdog's pipe: it ends what is left of the instance, and exits."""
    try:
        watchdog.stdin.close()
    except OSError:
        pass
    try:
        watchdog.wait(timeout=5)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return "?"


def epoch() -> int:
    """Which local instance is up: a number that changes whenever one starts (an
    evaluator keeps the one it was prepared on)."""
    return _epoch


def check(since: int | None = None) -> None:
    """Raise ``ClusterError`` if the local instance lost its raylet or head (it is
    shut down first: Ray would end this process once it misses the node), or if
    the instance of ``since`` (an ``epoch()``) is gone."""
    with _lock:
        why = _local.lost() if _local is not None else None
        if why is not None:
            _abandon(why)
        if why is not None or (since is not None and since != _epoch):
            raise ClusterError(f"{_lost or 'the local Ray instance was shut down'}; the tuning run stopped "
                               "(its evaluations so far are recorded, and the next run starts a fresh instance)")


def alive(since: int) -> bool:
    """Whether the instance of ``since`` (an ``epoch()``) is still up."""
    with _lock:
        return since == _epoch and (_local is None or _local.lost() is None)


@contextlib.contextmanager
def using_ray(since: int | None = None):
    """Hold the instance for a call into Ray (the monitor does not shut it down
    meanwhile); raises ``ClusterError`` first if it is lost."""
    with _lock:
        check(since)
        yield


def wait(refs: list, timeout: float, since: int | None = None) -> list:
    """``ray.wait`` for the first of ``refs`` to finish within ``timeout`` seconds,
    checking every half second that the instance is alive; returns the ready refs."""
    import ray

    deadline = time.monotonic() + timeout
    while True:
        with using_ray(since):
            left = deadline - time.monotonic()
            ready, _ = ray.wait(refs, num_returns=1, timeout=max(0.0, min(MONITOR_SECONDS, left)))
        if ready or left <= MONITOR_SECONDS:
            return ready


def get(ref, timeout: float, since: int | None = None):
    """``ray.get`` of ``ref`` within ``timeout`` seconds (else ``TimeoutError``),
    checking every half second that the instance is alive."""
    import ray

    if not wait([ref], timeout, since):
        raise TimeoutError(f"no result after {timeout:.3g} s")
    with using_ray(since):
        return ray.get(ref)


def _abandon(why: str) -> bool:
    """Forget the local instance that lost a vital process, and shut Ray down if it
    is still connected to it; whether it was (else the program shut it down itself)."""
    global _lost
    ours = _connected(_local)
    _lost = f"the local Ray instance failed: {why}" if ours else "the local Ray instance was shut down"
    _shut_down()
    return ours


def _connected(local: "_LocalInstance | None") -> bool:
    """Whether Ray in this process is connected to ``local``."""
    import ray

    try:
        return local is not None and ray.is_initialized() and ray.get_runtime_context().gcs_address == local.address
    except Exception:  # noqa: BLE001 - a Ray half shut down
        return False


def _shut_down() -> None:
    global _local, _epoch
    import ray

    local, _local = _local, None
    _epoch += 1
    if local is not None:
        local.stop.set()
    try:
        if _connected(local):
            ray.shutdown()
    finally:
        if local is not None:
            local.close()


def shutdown_local_ray() -> None:
    """Stop the local Ray instance this process started, if any (the next use starts
    it again); a cluster joined by address is left alone."""
    global _lost
    with _lock:
        if _local is None:
            return
        _lost = None
        _shut_down()


def node_id() -> str:
    """The Ray node this code runs on."""
    import ray

    return ray.get_runtime_context().get_node_id()
