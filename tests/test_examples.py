"""Every script in examples/ runs as it is, with a tiny budget and a private cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))
#: What an example's output must say (any other example: that it said something).
EXPECTED = {
    "quickstart": "kernel(a, b) matches a @ b",
    "conv_resnet_layer": "matches the NumPy reference",
    "custom_operator": "matches the NumPy reference",
    "ray_cluster": "tuned on the cluster at 127.0.0.1:",
}


#: Examples that start or join Ray.
RAY = {"ray_cluster"}
#: Examples long enough to be run on purpose (``-m slow``): a whole network's layers.
SLOW = {"squeezenet_tengine"}


def _marks(stem: str) -> list:
    return [pytest.mark.ray] * (stem in RAY) + [pytest.mark.slow] * (stem in SLOW)


@pytest.mark.parametrize("script", [pytest.param(p, id=p.stem, marks=_marks(p.stem)) for p in EXAMPLES])
def test_example_runs(script, cache, tmp_path):
    env = {**os.environ, "EVOKERNEL_EXAMPLE_BUDGET": "3", "EVOKERNEL_CACHE_DIR": str(cache)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=540, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert EXPECTED.get(script.stem, "") in done.stdout and done.stdout.strip(), done.stdout[-3000:]


def test_every_example_is_collected():
    names = {p.stem for p in EXAMPLES}
    assert {"quickstart", "conv_resnet_layer", "custom_operator", "ray_cluster"} <= names
