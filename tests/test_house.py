"""The floors of the package: a module imports only from its own floor or below, and
no modules of one package import each other in a circle (the contracts in
pyproject.toml, checked by import-linter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "floors import downwards only KEPT" in done.stdout
    assert "no circles among the modules of a package KEPT" in done.stdout


def test_every_floor_named_in_the_contract_exists():
    """A floor renamed without the contract would leave it checking nothing."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.10 has no TOML reader")
    import evokernel

    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    names = [name.strip() for layer in contract["layers"] for name in layer.split("|")]
    package = Path(evokernel.__file__).parent
    for name in names:
        relative = Path(*name.split(".")[1:])
        assert (package / relative).is_dir() or (package / relative).with_suffix(".py").is_file(), name
    top = {p.stem if p.suffix else p.name for p in package.iterdir()
           if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name not in ("__init__.py", "__main__.py")}
    assert top <= {n.split(".")[1] for n in names}, "a module of the package is on no floor"
