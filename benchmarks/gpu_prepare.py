"""Pack what ``gpu_check.py`` needs on a GPU machine that has no package index.

    python benchmarks/gpu_prepare.py                       # into build/gpu-carry (git-ignored)
    python benchmarks/gpu_prepare.py --wheels DIR          # from wheels downloaded already

The GPU machine has Python 3.12 with NumPy, PyTorch, pytest, psutil, rich and
filelock, and nothing else of evokernel's. This finds the distributions that
importing evokernel (and its worker and autoscheduler processes) loads, drops those
the GPU machine has, downloads each one's wheel for that Python (the versions
installed here; ``pip download``, binary wheels only) unless ``--wheels`` has them,
and writes into ``--out``: Halide's wheel unpacked and recompressed with xz (69 MB
as a wheel, ~46 MB as .tar.xz, under the 64 MiB one call may carry), every other
wheel as it is, and ``manifest.json`` (the Python version, each file's SHA-256).
It prints the total with this working tree's size beside it: both travel together.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What the GPU machine's Python has already (and the test runner's packages).
GPU_MACHINE_HAS = {"numpy", "torch", "pytest", "psutil", "rich", "filelock", "markdown-it-py", "mdurl", "pygments",
                   "typing-extensions", "evokernel"}
#: Wheels recompressed with xz (the rest are carried as they are).
XZ = ("halide",)
#: Parts of Halide's wheel that gpu_check never uses: tools, static libraries, CMake files, docs.
DROP = re.compile(r"^halide/(bin/|share/|lib64/cmake/|lib64/.*\.a$)")
CARRY_LIMIT = 64 << 20  # bytes one call may carry, the working tree included
_IMPORTS = """
import importlib.metadata as md, json, sys
import evokernel, evokernel.tuner, evokernel.bench, evokernel.bench._autoschedule, evokernel.evaluators._worker
dists = md.packages_distributions()
names = {m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names) - {"_distutils_hack"}
found = {d: md.version(d) for m in names for d in dists.get(m, [])}
print(json.dumps(found))
"""


class PrepareError(Exception):
    """A problem this script reports in one line (exit status 2)."""


def project(name: str) -> str:
    """A distribution's normalised name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def needed_distributions() -> dict[str, str]:
    """Distribution -> version of what importing evokernel loads here, less what the
    GPU machine has."""
    done = subprocess.run([sys.executable, "-c", _IMPORTS], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise PrepareError(f"importing evokernel failed here: {done.stderr.strip()[-500:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: version for name, version in sorted(found.items()) if project(name) not in GPU_MACHINE_HAS}


def download(dists: dict[str, str], python: str, directory: Path) -> None:
    """``pip download`` the binary wheels of ``dists`` for CPython ``python`` on x86-64 Linux."""
    tag = python.replace(".", "")
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               python, "--implementation", "cp", "--abi", f"cp{tag}", "--abi", "abi3", "--abi", "none",
               *(f"--platform={p}" for p in platforms), "-d", str(directory),
               *(f"{name}=={version}" for name, version in dists.items())]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise PrepareError(f"pip download failed: {done.stderr.strip()[-800:]}")


def wheels_for(dists: dict[str, str], directory: Path) -> dict[str, Path]:
    """Distribution -> its wheel in ``directory`` (of the version asked for)."""
    found = {}
    for wheel in sorted(Path(directory).glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        found[(project(name), version)] = wheel
    missing = [f"{n}=={v}" for n, v in dists.items() if (project(n), v) not in found]
    if missing:
        raise PrepareError(f"no wheel in {directory} for {', '.join(missing)}")
    return {n: found[(project(n), v)] for n, v in dists.items()}


def recompress(wheel: Path, out: Path) -> Path:
    """The wheel's files (less ``DROP``) as ``<wheel stem>.tar.xz`` in ``out``."""
    target = out / (wheel.name.removesuffix(".whl") + ".tar.xz")
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                if not DROP.match(member.filename):
                    archive.extract(member, tmp)
        names = sorted(p.name for p in Path(tmp).iterdir())
        if shutil.which("xz") and shutil.which("tar"):  # threaded: minutes faster than lzma on halide
            with open(target, "wb") as f:
                tar = subprocess.Popen(["tar", "-cf", "-", "-C", tmp, *names], stdout=subprocess.PIPE)
                xz = subprocess.run(["xz", "-6", "-T0", "-c"], stdin=tar.stdout, stdout=f)
                tar.stdout.close()
                if tar.wait() != 0 or xz.returncode != 0:
                    raise PrepareError(f"tar | xz failed on {wheel.name}")
        else:
            with tarfile.open(target, "w:xz", preset=6) as archive:
                for name in names:
                    archive.add(Path(tmp, name), arcname=name)
    return target


def tree_bytes() -> int:
    """The size of this working tree's files as a call carries them (tracked and
    untracked, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        return 0
    return sum((ROOT / p).stat().st_size for p in listed.stdout.decode().split("\0") if p and (ROOT / p).is_file())


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare(out: Path, python: str, wheels: Path | None, xz=XZ, dists: dict[str, str] | None = None) -> dict:
    """Write the carry into ``out``; returns its manifest."""
    dists = needed_distributions() if dists is None else dists
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file() and (old.suffix == ".whl" or old.name.endswith(".tar.xz") or old.name == "manifest.json"):
            old.unlink()
    if wheels is None:
        wheels = out.parent / (out.name + "-wheels")
        wheels.mkdir(exist_ok=True)
        download(dists, python, wheels)
    files = []
    for name, wheel in wheels_for(dists, wheels).items():
        carried = recompress(wheel, out) if project(name) in {project(x) for x in xz} else Path(
            shutil.copy2(wheel, out / wheel.name))
        files.append({"name": carried.name, "sha256": digest(carried), "bytes": carried.stat().st_size})
    manifest = {"python": python, "created": time.strftime("%Y-%m-%d %H:%M"), "distributions": dists,
                "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-carry", help="default: build/gpu-carry")
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python (default 3.12)")
    parser.add_argument("--wheels", type=Path, help="a directory with the wheels already (no download)")
    args = parser.parse_args(argv)
    try:
        manifest = prepare(args.out, args.python, args.wheels)
    except PrepareError as error:
        print(f"gpu_prepare: {error}", file=sys.stderr)
        return 2
    carried = sum(f["bytes"] for f in manifest["files"])
    tree = tree_bytes()
    for f in manifest["files"]:
        print(f"{f['bytes'] / 2**20:8.1f} MiB  {f['name']}")
    print(f"{carried / 2**20:8.1f} MiB carried + {tree / 2**20:.1f} MiB working tree "
          f"(a call carries {CARRY_LIMIT >> 20} MiB at most)")
    try:
        relative = args.out.resolve().relative_to(ROOT)
    except ValueError:
        relative = args.out
    print(f"on the GPU machine: python3 benchmarks/gpu_check.py --carry {relative} --out \"$OUT\"  "
          f"(carry: [\"{relative}\"])")
    if carried + tree > CARRY_LIMIT:
        print("gpu_prepare: too large for one call: carry the files in two calls to a warm machine", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
