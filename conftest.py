"""Fixtures of every test and doctest: each session compiles into a private cache.

``cache`` is a fresh private cache directory per test; ``make_cache`` makes one for a
fixture of wider scope; ``tuned`` tunes small kernels once per session.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from evokernel.codegen import ENV_VAR


def _private(path: Path) -> Path:
    """``path`` as a new directory only its owner may read or write (the cache refuses any other)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """Every test compiles into a fresh cache directory, never the user's."""
    path = _private(tmp_path_factory.mktemp("evokernel-cache"))
    saved = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(path)
    try:
        yield path
    finally:
        if saved is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = saved


@pytest.fixture(scope="session", autouse=True)
def private_activity_dir(tmp_path_factory):
    """Evaluations of this test session see each other as running at once, not those
    of another session on the machine (whose timings would make theirs untrusted)."""
    from evokernel.evaluators._activity import ENV_VAR as ACTIVITY

    saved = os.environ.get(ACTIVITY)
    os.environ[ACTIVITY] = str(_private(tmp_path_factory.mktemp("evokernel-activity")))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(ACTIVITY, None)
        else:
            os.environ[ACTIVITY] = saved


@pytest.fixture(scope="session")
def make_cache(tmp_path_factory):
    """``make_cache(name="cache")``: a fresh private cache directory (mode 0700), for
    fixtures that outlive one test; a test takes ``cache``."""
    def make(name: str = "cache") -> Path:
        return _private(tmp_path_factory.mktemp(name))
    return make


@pytest.fixture
def cache(tmp_path):
    """A fresh private cache directory (mode 0700) for this test alone: nothing tuned
    or recorded elsewhere in the session is found, returned or resumed there."""
    return _private(tmp_path / "cache")


@pytest.fixture(scope="session")
def tuned(make_cache):
    """``tuned(op, budget=2, *, target="host", evaluator="local", cache_dir=None)``: a
    Kernel of ``op`` tuned with seed 0, once per session.

    Kernels are kept by (cache, operator key, target): a second request returns the
    first kernel. Without ``cache_dir`` they are tuned into a cache of their own, so
    that each is a fresh search of exactly ``budget``, whatever other tests tuned or
    recorded; asking for a kept kernel with another budget or evaluator is an error
    of the test, not a silent reuse.
    """
    import evokernel as ek

    own = make_cache("tuned")
    kept: dict[tuple, tuple] = {}

    def tune(op, budget=2, *, target="host", evaluator="local", cache_dir=None):
        if not isinstance(evaluator, str):
            raise TypeError("tuned() takes an evaluator by name; tune with an Evaluator object directly")
        root = Path(cache_dir) if cache_dir is not None else own
        key = (str(root), op.key, ek.Target.parse(target).string)
        how = (str(ek.Budget.parse(budget)), evaluator)
        if key in kept:
            kernel, first = kept[key]
            if first != how:
                raise ValueError(f"tuned({op.key}) asked with budget {how[0]!r} and evaluator {how[1]!r}, "
                                 f"but it was tuned with {first[0]!r} and {first[1]!r}: use another shape")
            return kernel
        kernel = ek.tune(op, target, budget=budget, seed=0, evaluator=evaluator, cache_dir=root)
        kept[key] = kernel, how
        return kernel

    return tune


#: A doctest example that tunes with the default evaluator (Ray) or uses Ray itself.
_STARTS_RAY = re.compile(r"\btune\((?![^\n]*\bevaluator=)|\bRayEvaluator\(|\bensure_ray\(")


def pytest_collection_modifyitems(config, items):
    """Doctests that start Ray carry the ``ray`` marker, as tests do."""
    for item in items:
        examples = getattr(getattr(item, "dtest", None), "examples", None)
        if examples and any(_STARTS_RAY.search(example.source) for example in examples):
            item.add_marker(pytest.mark.ray)
