"""The local Ray instance's watchdog, run as a script that imports nothing of evokernel:
``python -I _watchdog.py OWNER_PID [PID ...]``, with a pipe from its owner on stdin.

Ray's own processes (raylet, GCS, log monitor) die with the process that started
them (the kernel's parent-death signal), but the processes they start do not: after
a SIGKILL of the owner, Ray's agents lingered for half a minute and more, waiting on
a head that no longer answers.

The owner starts the watchdog just before it starts Ray; the other PIDs on the
command line are the owner's children then, which are not Ray's. Until the owner
writes the first line, the watchdog watches every new descendant of the owner (Ray
starting up); then the owner writes one line ``PID CREATE_TIME`` per process that
Ray started, and from then on those and their descendants are watched, twice a
second (what else started meanwhile is dropped, unless the owner is dead already). When the pipe closes (the owner exited, or was killed) the watchdog kills
every watched process still alive (a process id is only killed if its start time is
the one seen, never a later process that reuses the id), then exits.
"""

import os
import select
import signal
import sys

import psutil

SCAN_SECONDS = 0.5


def _same(pid: int, created: float) -> "psutil.Process | None":
    try:
        process = psutil.Process(pid)
        return process if process.create_time() == created else None
    except psutil.Error:
        return None


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _descendants(process: psutil.Process) -> list:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _watch(watched: dict, processes) -> None:
    for process in processes:
        try:
            watched.setdefault(process.pid, process.create_time())
        except psutil.Error:
            pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C the owner survives must not end the watch
    owner = psutil.Process(int(sys.argv[1]))
    others = {int(pid) for pid in sys.argv[2:]} | {os.getpid()}
    watched: dict[int, float] = {}
    roots: set[int] = set()
    pending = b""
    stdin = sys.stdin.fileno()
    while True:
        if not roots:  # Ray is starting: everything new under the owner is Ray's
            skip = set(others)
            for pid in others:
                try:
                    skip |= {p.pid for p in _descendants(psutil.Process(pid))}
                except psutil.Error:
                    pass
            _watch(watched, [p for p in _descendants(owner) if p.pid not in skip])
        for pid, created in list(watched.items()):
            process = _same(pid, created)
            if process is None:  # ended: forget it (its children, if any, are watched already)
                if pid not in roots:
                    del watched[pid]
            elif pid in roots:
                _watch(watched, _descendants(process))
        ready, _, _ = select.select([stdin], [], [], SCAN_SECONDS)
        if ready:
            chunk = os.read(stdin, 4096)
            if not chunk:
                break  # the owner is gone
            pending += chunk
            *lines, pending = pending.split(b"\n")
            first = bool(lines) and not roots
            for line in lines:
                pid, created = line.split()
                watched[int(pid)] = float(created)
                roots.add(int(pid))
            if first and _alive(owner):  # Ray is up: what else started meanwhile is not watched
                ours = set(roots)
                for pid in roots:
                    root = _same(pid, watched[pid])
                    ours |= {p.pid for p in _descendants(root)} if root is not None else set()
                watched = {pid: created for pid, created in watched.items() if pid in ours}
    for pid, created in watched.items():
        process = _same(pid, created)
        if process is not None:
            try:
                process.kill()
            except psutil.Error:
                pass


if __name__ == "__main__":
    main()
