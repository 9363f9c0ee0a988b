"""The embedded Ray instance with real Ray, each in a process of its own: it listens
on loopback only whatever the order of imports (and a program joining a loopback
cluster by ``RAY_ADDRESS`` too), it is gone within seconds of a SIGKILL of its
owner, and a SIGKILL of its raylet mid-tune leaves the owner alive with a clear
error; a stopped runner worker becomes a recorded failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import evokernel as ek
from evokernel import codegen
from evokernel.codegen import build, default_threads
from evokernel.evaluators import Context, Outcome, RayRunner, runner_resources
from evokernel.evaluators._cluster import LOOPBACK, loopback_only
from evokernel.genome import ScheduleSpace, unscheduled

pytestmark = pytest.mark.ray

LOOPBACK_ADDRESSES = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}

#: A program that starts (or joins) Ray through evokernel, with ``ray`` imported
#: before or after evokernel, puts a worker and an actor to work, says "ready" and
#: waits for its stdin to close.
PROGRAM = r"""
import sys
if sys.argv[1] == "ray-first":
    import ray
    import evokernel
else:
    import evokernel
    import ray
from evokernel.evaluators import ensure_ray

ray = ensure_ray()


@ray.remote
class Probe:
    def ping(self):
        return 1


probe = Probe.remote()
ray.get([probe.ping.remote(), ray.remote(lambda: 1).remote()])
print("ready", flush=True)
sys.stdin.read()
"""


def start_program(order: str, **env) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, order], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, **env})
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        pytest.fail(f"the program did not start Ray: {line!r}")
    return proc


def listening(processes) -> dict[str, set[str]]:
    """Process name -> the addresses its listening TCP sockets are bound to."""
    out: dict[str, set[str]] = {}
    for p in processes:
        try:
            addresses = {c.laddr.ip for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
            name = p.name()
        except psutil.Error:
            continue
        if addresses:
            out.setdefault(name, set()).update(addresses)
    return out


def assert_loopback_only(processes) -> dict[str, set[str]]:
    bound = listening(processes)
    assert "gcs_server" in bound and "raylet" in bound, bound
    assert any(name.startswith("ray::") for name in bound), f"no Ray worker listens: {bound}"
    exposed = {name: ips - LOOPBACK_ADDRESSES for name, ips in bound.items() if ips - LOOPBACK_ADDRESSES}
    assert not exposed, f"listening beyond loopback: {exposed}"
    return bound


def seconds_until_gone(processes: list[psutil.Process], limit: float = 30.0) -> float:
    """Seconds until none of ``processes`` runs (zombies count as gone)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        alive = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        if not alive:
            return time.monotonic() - start
        time.sleep(0.05)
    for p in alive:  # leave nothing behind for the next test
        try:
            p.kill()
        except psutil.Error:
            pass
    return float("inf")


def kill_owner(proc: subprocess.Popen) -> float:
    """SIGKILL the program; seconds until every process of its Ray instance is gone."""
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert any(p.name() == "raylet" for p in tree)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return seconds_until_gone(tree)


@pytest.mark.parametrize("order", ["ray-first", "evokernel-first"])
def test_the_local_instance_listens_on_loopback_only_and_dies_with_its_owner(order):
    """``import ray`` before evokernel (as Ray users write) or after: every process of
    the instance (head, raylet, workers, the owner's own core worker) listens on
    127.0.0.1 only; after a SIGKILL of the owner, all of them (the agents too) are
    gone within 5 s."""
    env = {"RAY_ADDRESS": ""}
    proc = start_program(order, **env)
    try:
        owner = psutil.Process(proc.pid)
        assert_loopback_only([owner, *owner.children(recursive=True)])
        assert kill_owner(proc) <= 5.0
    finally:
        proc.kill()


@pytest.mark.slow
def test_the_local_instance_is_gone_within_5_s_over_5_kills():
    for kill in range(5):
        proc = start_program("ray-first")
        try:
            gone = kill_owner(proc)
        finally:
            proc.kill()
        assert gone <= 5.0, f"kill {kill}: Ray outlived its owner by {gone:.1f} s"


@pytest.fixture
def loopback_cluster():
    """A one-node Ray cluster on 127.0.0.1, started by this process."""
    from ray.cluster_utils import Cluster

    with loopback_only():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK,
                                                                "resources": runner_resources("host")})
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


def test_a_program_joining_a_loopback_cluster_by_ray_address_listens_on_loopback_only(loopback_cluster):
    """``RAY_ADDRESS=127.0.0.1:port``: Ray would rewrite that address to the machine's
    network address, where the cluster does not listen; evokernel joins it as given,
    and the program's own processes listen on loopback too."""
    proc = start_program("ray-first", RAY_ADDRESS=loopback_cluster.address)
    try:
        me = psutil.Process()
        assert_loopback_only([me, *me.children(recursive=True)])
        assert listening([psutil.Process(proc.pid)]), "the program's core worker listens (on loopback)"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


#: A tune on the local instance whose raylet is SIGKILLed after its third evaluation
#: (from the progress callback, in the tuning thread). The head is told to give a
#: silent node up after ~1.5 s (15 s by default): Ray ends the owner once that
#: happens, unless it was shut down first.
RAYLET_KILLED = r"""
import atexit, os, signal, sys, time
import psutil
import evokernel as ek

atexit.register(lambda: print("exit handlers ran", flush=True))


def kill_the_raylet_after_three(progress):
    if progress.evaluations == 3:
        raylet = next(p for p in psutil.Process().children() if p.name() == "raylet")
        os.kill(raylet.pid, signal.SIGKILL)
        print("raylet killed", flush=True)


try:
    ek.tune(ek.operators.matmul(48, 40, 32), budget=500, seed=0, records="memory", cache_dir=sys.argv[1],
            progress=kill_the_raylet_after_three)
    print("tuned without noticing", flush=True)
except ek.ClusterError as error:
    print("ClusterError:", error, flush=True)
time.sleep(3)
print("still alive", flush=True)
"""


def test_a_raylet_killed_mid_tune_leaves_the_process_alive_with_a_clear_error(cache):
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_health_check_initial_delay_ms": "0",
           "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3"}
    done = subprocess.run([sys.executable, "-c", RAYLET_KILLED, str(cache)], capture_output=True, text=True,
                          env=env, timeout=300)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "raylet killed" in lines
    error = next(line for line in lines if line.startswith("ClusterError:"))
    assert "raylet" in error and "stopped" in error and "recorded" in error
    assert lines[-2:] == ["still alive", "exit handlers ran"]


# -- a stopped runner worker ----------------------------------------------------------------

def _runner_workers(parent: psutil.Process) -> list[psutil.Process]:
    """The workers that time kernels under a runner actor, below ``parent``."""
    out = []
    for p in parent.children(recursive=True):
        try:
            if "evokernel.evaluators._worker" in " ".join(p.cmdline()) and "RunnerActor" in p.parent().name():
                out.append(p)
        except (psutil.Error, AttributeError):
            pass
    return out


def _relu_runner() -> tuple[RayRunner, object]:
    """A Ray runner prepared for relu on 64 floats, and that operator's unscheduled artifact."""
    ek.evaluators.ensure_ray()
    op = ek.operators.relu((64,))
    target = ek.Target.parse("host")
    space = ScheduleSpace.of(op, target, default_threads())
    artifact = build(op, space, unscheduled(space), target)
    runner = RayRunner()
    runner.prepare(Context(op, target, space, default_threads(), codegen.cache_dir()))
    return runner, artifact


def test_a_stopped_runner_worker_on_ray_is_a_run_timeout_and_the_next_kernel_is_timed(cache):
    """SIGSTOP of the worker that times kernels under the runner actor: the kernel in
    flight is a ``run_timeout`` within its run timeout, and a fresh worker times the
    next one."""
    runner, artifact = _relu_runner()
    try:
        assert runner.measure(artifact, None, 30.0, ek.evaluators.Protocol()).outcome is Outcome.OK
        (worker,) = _runner_workers(psutil.Process())
        worker.suspend()
        start = time.monotonic()
        m = runner.measure(artifact, None, 2.0, ek.evaluators.Protocol())
        assert m.outcome is Outcome.RUN_TIMEOUT, m
        assert time.monotonic() - start < 2.0 + runner.allowance()
        assert runner.measure(artifact, None, 30.0, ek.evaluators.Protocol()).outcome is Outcome.OK
    finally:
        runner.close()


@pytest.mark.slow
def test_a_stopped_runner_actor_is_given_up_within_the_run_timeout_and_replaced(cache):
    """SIGSTOP of the runner actor itself: the measurement is a ``run_crash`` after
    the run timeout and the actor's allowance (not a minute later), and a new actor
    times the next kernel."""
    runner, artifact = _relu_runner()
    try:
        assert runner.measure(artifact, None, 30.0, ek.evaluators.Protocol()).outcome is Outcome.OK
        (worker,) = _runner_workers(psutil.Process())
        actor = worker.parent()
        allowance = runner.allowance()
        actor.suspend()
        start = time.monotonic()
        m = runner.measure(artifact, None, 1.0, ek.evaluators.Protocol())
        waited = time.monotonic() - start
        assert m.outcome is Outcome.RUN_CRASH and "runner lost" in m.message, m
        assert waited < 1.0 + allowance + 5.0
        assert runner.measure(artifact, None, 30.0, ek.evaluators.Protocol()).outcome is Outcome.OK
    finally:
        runner.close()
