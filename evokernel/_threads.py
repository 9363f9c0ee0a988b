"""Other libraries' thread pools in this process, and the settings that keep them
from sharing the cores with a kernel's own pool right after their calls.

OpenBLAS's worker threads (NumPy's BLAS) spin for 2^28 cycles (about 0.1 s) after
every call before they sleep, and OpenMP's (PyTorch's pool, an OpenMP BLAS) spin
too: a kernel called in that window runs its threads beside theirs. Both read
their setting when the library loads, so it must be in the environment before
Python starts (or before NumPy or PyTorch is first imported).
"""

from __future__ import annotations

import os

#: What makes each kind of pool sleep as soon as its work is done.
SETTINGS = {"openblas": ("OPENBLAS_THREAD_TIMEOUT", "4"), "openmp": ("OMP_WAIT_POLICY", "PASSIVE")}


def thread_advice() -> list[str]:
    """One line per thread pool loaded in this process that spins after its calls,
    naming the library and the environment setting that makes it sleep at once;
    empty when there is nothing to change.

    >>> import evokernel as ek
    >>> all("=" in line for line in ek.thread_advice())
    True
    """
    from threadpoolctl import threadpool_info

    advice = []
    for pool in threadpool_info():
        kind = pool.get("internal_api")
        if kind == "openblas" and pool.get("threading_layer") == "openmp":
            kind = "openmp"  # an OpenMP build of OpenBLAS waits as OpenMP does
        if kind not in SETTINGS or pool.get("num_threads", 1) < 2:
            continue
        name, value = SETTINGS[kind]
        if os.environ.get(name, "").upper() == value:
            continue
        library = os.path.basename(pool.get("filepath") or kind)
        advice.append(f"{library} ({kind}, {pool['num_threads']} threads) spins after its calls: set "
                      f"{name}={value} in the environment before Python starts")
    return sorted(set(advice))
