"""Fixtures of every test and doctest: each session compiles into a private cache."""

from __future__ import annotations

import os

import pytest

from evokernel.codegen import ENV_VAR


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """Every test compiles into a fresh cache directory, never the user's."""
    path = tmp_path_factory.mktemp("evokernel-cache")
    path.chmod(0o700)
    saved = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(path)
    try:
        yield path
    finally:
        if saved is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = saved
