"""The Ray cluster's lifecycle: join one by address, or start the embedded local
instance once (on loopback, sized to this machine, quiet, without dashboard, shut
down at exit); and the runner resources by which nodes offer to time kernels.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket

from ..codegen import default_threads
from ..errors import EvokernelError
from ..target import Target, gpu_available

RESOURCE_PREFIX = "evokernel-runner:"

_started_here = False


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
    once; returns the ``ray`` module."""
    global _started_here
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "auto":
        reachable(address)
    if not address:
        # On Linux, Ray binds to the machine's network address unless this is set
        # before Ray is imported: keep the embedded instance on loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray runs its workers at nice 15, below everything else on the machine; on
        # the embedded instance they do the tuning itself (builds ~17% slower, and
        # timings open to any background process, at 15).
        os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    if ray.is_initialized():
        return ray
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address:
        ray.init(address=address, **quiet)
        return ray
    ray.init(address="local", num_cpus=default_threads(), resources=local_runner_resources(), **quiet)
    _started_here = True
    atexit.register(shutdown_local_ray)
    return ray


def shutdown_local_ray() -> None:
    """Stop the local Ray instance this process started, if any (the next use starts
    it again); a cluster joined by address is left alone."""
    global _started_here
    if not _started_here:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _started_here = False


def node_id() -> str:
    """The Ray node this code runs on."""
    import ray

    return ray.get_runtime_context().get_node_id()
