"""Bad inputs across the API and the command line, as a careless or hostile user
would pass them: each raises an ``EvokernelError`` subclass (an ``argparse`` usage
error exits with status 2), whose message names the culprit: the argument, the
value or the file. Nothing here tunes: every input is refused at the door."""

from __future__ import annotations

import json
import re
import os
import shutil
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import evokernel as ek
from evokernel.cli import main
from evokernel.codegen import ENV_VAR
from evokernel.errors import (ArgumentError, BudgetError, CacheError, EvokernelError, KernelCallError,
                              NotTunedError, OperatorArgumentError, SearchSettingsError, TargetError,
                              UnsupportedDtypeError, UntrustedBundleError)

ops = ek.operators
OP = ops.relu((4, 40))  # the kernel every row that needs one uses


@dataclass
class Ctx:
    """A private cache holding ``kernel`` (OP, tuned), its saved ``bundle``, and a
    scratch directory for files the rows make."""

    cache: Path
    kernel: ek.Kernel
    bundle: Path
    tmp: Path

    def local(self) -> dict:
        """tune() settings that never start Ray nor touch the user's cache: with the
        budget the kernel was tuned with, a bad input let through returns the cached
        kernel at once (and the row fails), it does not tune."""
        return {"budget": 2, "evaluator": "local", "cache_dir": self.cache, "progress": False}

    def copy(self) -> Path:
        """A fresh copy of the cache, for rows that damage it."""
        target = self.tmp / f"cache-{len(list(self.tmp.glob('cache-*')))}"
        shutil.copytree(self.cache, target, ignore=shutil.ignore_patterns("scratch"))
        return target

    def file(self, name: str, data: bytes = b"not what it should be") -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path

    def bundle_with(self, name: str, change) -> Path:
        """A copy of the bundle whose members ``change(dict)`` rewrote."""
        with zipfile.ZipFile(self.bundle) as z:
            members = {n: z.read(n) for n in z.namelist()}
        change(members)
        path = self.tmp / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for n, data in members.items():
                z.writestr(n, data)
        return path

    def damaged_entry(self, change) -> Path:
        """A cache copy whose kernel metadata ``change(path of meta.json)`` damaged."""
        root = self.copy()
        (meta,) = root.glob("kernels/*/meta.json")
        change(meta)
        return root


@pytest.fixture(scope="module")
def ctx(make_cache, tmp_path_factory):
    cache = make_cache("bad-inputs")
    kernel = ek.tune(OP, budget=2, seed=0, evaluator="local", cache_dir=cache, progress=False)
    tmp = tmp_path_factory.mktemp("bad-inputs-files")
    return Ctx(cache, kernel, kernel.save(tmp / "relu.ekb"), tmp)


@contextmanager
def cache_env(path: Path):
    saved = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = saved


def cli(c: Ctx, *argv: str):
    """Run the command line on the context's cache, raising what it raises (--debug)."""
    with cache_env(c.cache):
        return main(["--debug", *argv])


def T(c: Ctx, operator, **arguments):
    """``tune(operator)`` with the context's settings, ``arguments`` overriding them."""
    return ek.tune(operator, **{**c.local(), **arguments})


def x(shape=(4, 40), dtype=np.float32):
    return np.zeros(shape, dtype)


def meta_edit(**changes):
    def change(path: Path) -> None:
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return change


def replace_member(name: str, data: bytes):
    def change(members: dict) -> None:
        members[name] = data
    return change


def forged(members: dict) -> None:
    """Another object in place of the kernel, the manifest recomputed to match."""
    import hashlib

    code = bytearray(members["kernel.o"])
    code[len(code) // 2] ^= 0xFF
    members["kernel.o"] = bytes(code)
    manifest = json.loads(members["MANIFEST"])
    manifest["kernel.o"] = hashlib.sha256(members["kernel.o"]).hexdigest()
    members["MANIFEST"] = json.dumps(manifest, sort_keys=True).encode()


def deflate_damage(c: Ctx) -> Path:
    """The bundle with bytes flipped inside kernel.o's compressed data."""
    data = bytearray(c.bundle.read_bytes())
    with zipfile.ZipFile(c.bundle) as z:
        info = z.getinfo("kernel.o")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for offset in range(start + 10, start + 40):
        data[offset] ^= 0x5A
    return c.file("deflate.ekb", bytes(data))


def fifo(c: Ctx) -> Path:
    path = c.tmp / "fifo.ekb"
    if not path.exists():
        os.mkfifo(path)
    return path


def double(params):
    import halide as hl

    i = hl.Var("i")
    out = hl.Func("out")
    out[i] = params[0][i] * 2
    return out


def custom(**changes):
    args = {"name": "double", "inputs": [("x", (50,))], "output_shape": (50,), "algorithm": double,
            "reference": lambda a: a * 2, **changes}
    return ops.custom(**args)


def no_memory():
    """An operator whose arrays fit Halide's indexing but no machine's memory:
    64 float64 inputs of 2^31 - 1 elements (1 TiB)."""
    n = 2**31 - 1
    return ops.custom("huge", [(f"x{i}", (n,)) for i in range(64)], (n,), double, lambda *a: a[0],
                      dtype="float64")


# (id, call, exception type, a regular expression the message must match: it names the culprit)
API = [
    # operators: sizes, dtypes and arguments
    ("matmul m=0", lambda c: ops.matmul(0, 4, 4), OperatorArgumentError, r"\bm must be"),
    ("matmul m=-1", lambda c: ops.matmul(-1, 4, 4), OperatorArgumentError, r"\bm must be"),
    ("matmul m=4.5", lambda c: ops.matmul(4.5, 4, 4), OperatorArgumentError, r"\bm must be.*4\.5"),
    ("matmul m='4'", lambda c: ops.matmul("4", 4, 4), OperatorArgumentError, r"\bm must be.*'4'"),
    ("matmul m=True", lambda c: ops.matmul(True, 4, 4), OperatorArgumentError, r"\bm must be.*True"),
    ("matmul dtype=None", lambda c: ops.matmul(4, 4, 4, dtype=None), UnsupportedDtypeError, r"dtype None"),
    ("matmul dtype=int8", lambda c: ops.matmul(4, 4, 4, dtype="int8"), UnsupportedDtypeError, r"'int8'"),
    ("matmul dtype=float16", lambda c: ops.matmul(4, 4, 4, dtype="float16"), UnsupportedDtypeError, r"'float16'"),
    ("matmul dtype=nonsense", lambda c: ops.matmul(4, 4, 4, dtype="nonsense"), UnsupportedDtypeError, r"'nonsense'"),
    ("matmul dtype=[1]", lambda c: ops.matmul(4, 4, 4, dtype=[1]), UnsupportedDtypeError, r"dtype \[1\]"),
    ("matmul out of 2^31", lambda c: ops.matmul(2**20, 2**20, 2), OperatorArgumentError, r"'out'.*2\^31"),
    ("matmul B of 2^31", lambda c: ops.matmul(4, 2**31, 1), OperatorArgumentError, r"'B' of shape \(1, 2147483648\)"),
    ("fc batch=0", lambda c: ops.fc(0, 4, 4), OperatorArgumentError, r"batch must be"),
    ("fc bias='yes'", lambda c: ops.fc(4, 4, 4, bias="yes"), OperatorArgumentError, r"bias must be"),
    ("fc dtype=None", lambda c: ops.fc(4, 4, 4, dtype=None), UnsupportedDtypeError, r"dtype None"),
    ("fc input of 2^32", lambda c: ops.fc(2**16, 2**16, 1), OperatorArgumentError, r"'input'.*4294967296 elements"),
    ("conv2d k=0", lambda c: ops.conv2d(1, 3, 8, 8, 4, 0), OperatorArgumentError, r"kernel must be"),
    ("conv2d stride=0", lambda c: ops.conv2d(1, 3, 8, 8, 4, 3, stride=0), OperatorArgumentError, r"stride must be"),
    ("conv2d pad=-1", lambda c: ops.conv2d(1, 3, 8, 8, 4, 3, pad=-1), OperatorArgumentError, r"padding must be"),
    ("conv2d groups", lambda c: ops.conv2d(1, 3, 8, 8, 4, 3, groups=2), OperatorArgumentError, r"c_in=3 .*groups=2"),
    ("conv2d activation", lambda c: ops.conv2d(1, 3, 8, 8, 4, 3, activation="gelu"), OperatorArgumentError,
     r"activation 'gelu'"),
    ("conv2d kernel too large", lambda c: ops.conv2d(1, 3, 4, 4, 4, 9), OperatorArgumentError, r"kernel 9x9"),
    ("conv2d dilation=(1,)", lambda c: ops.conv2d(1, 3, 8, 8, 4, 3, dilation=(1,)), OperatorArgumentError,
     r"dilation must be"),
    ("conv2d bias=1", lambda c: ops.conv2d(1, 3, 8, 8, 4, 3, bias=1), OperatorArgumentError, r"bias must be"),
    ("conv2d dtype=None", lambda c: ops.conv2d(1, 3, 8, 8, 4, 3, dtype=None), UnsupportedDtypeError, r"dtype None"),
    ("conv2d input of 2^36", lambda c: ops.conv2d(1, 2**12, 2**12, 2**12, 4, 3), OperatorArgumentError,
     r"'input' of shape \(1, 4096, 4096, 4096\)"),
    ("depthwise c=0", lambda c: ops.depthwise_conv2d(1, 0, 8, 8, 3), OperatorArgumentError, r"\bc(_in)? must be"),
    ("max_pool2d k=0", lambda c: ops.max_pool2d(1, 3, 8, 8, 0), OperatorArgumentError, r"kernel must be"),
    ("max_pool2d ceil_mode='yes'", lambda c: ops.max_pool2d(1, 3, 8, 8, 2, ceil_mode="yes"), OperatorArgumentError,
     r"ceil_mode must be"),
    ("max_pool2d stride=0", lambda c: ops.max_pool2d(1, 3, 8, 8, 2, stride=0), OperatorArgumentError,
     r"stride must be"),
    ("max_pool2d dtype=None", lambda c: ops.max_pool2d(1, 3, 8, 8, 2, dtype=None), UnsupportedDtypeError,
     r"dtype None"),
    ("relu 0", lambda c: ops.relu(0), OperatorArgumentError, r"shape must have positive sizes"),
    ("relu (2, 0)", lambda c: ops.relu((2, 0)), OperatorArgumentError, r"shape must have positive sizes"),
    ("relu rank 5", lambda c: ops.relu((1, 2, 3, 4, 5)), OperatorArgumentError, r"shape must have rank"),
    ("relu '8'", lambda c: ops.relu("8"), OperatorArgumentError, r"shape must be"),
    ("relu dtype=None", lambda c: ops.relu(8, dtype=None), UnsupportedDtypeError, r"dtype None"),
    ("relu 2^31", lambda c: ops.relu(2**31), OperatorArgumentError, r"'input' of shape \(2147483648,\)"),
    ("relu 2^16 x 2^16", lambda c: ops.relu((2**16, 2**16)), OperatorArgumentError, r"'input'.*2\^31"),
    ("relu6 -3", lambda c: ops.relu6(-3), OperatorArgumentError, r"shape must have positive sizes"),
    ("relu6 dtype=int32", lambda c: ops.relu6(8, dtype="int32"), UnsupportedDtypeError, r"'int32'"),
    ("add dtype=None", lambda c: ops.add((4, 4), dtype=None), UnsupportedDtypeError, r"dtype None"),
    ("add 2^31", lambda c: ops.add(2**31), OperatorArgumentError, r"'a' of shape"),
    ("softmax 0", lambda c: ops.softmax(0), OperatorArgumentError, r"shape must have positive sizes"),
    ("softmax dtype=None", lambda c: ops.softmax(8, dtype=None), UnsupportedDtypeError, r"dtype None"),
    ("custom name", lambda c: custom(name="1bad"), OperatorArgumentError, r"operator name .*'1bad'"),
    ("custom no inputs", lambda c: custom(inputs=[]), OperatorArgumentError, r"inputs must be"),
    ("custom same names", lambda c: custom(inputs=[("x", 4), ("x", 4)]), OperatorArgumentError, r"input names"),
    ("custom algorithm", lambda c: custom(algorithm=5), OperatorArgumentError, r"algorithm must be a function"),
    ("custom flops=-1", lambda c: custom(flops=-1), OperatorArgumentError, r"flops must be"),
    ("custom output of 2^31", lambda c: custom(output_shape=2**31), OperatorArgumentError, r"'out' of shape"),
    # tune(): every argument, refused before anything starts
    ("tune None", lambda c: T(c, None), ArgumentError, r"operator must be .*NoneType"),
    ("tune 'matmul'", lambda c: T(c, "matmul"), ArgumentError, r"operator must be .*str"),
    ("tune seed='abc'", lambda c: T(c, OP, seed="abc"), ArgumentError, r"seed .*'abc'"),
    ("tune seed=-1", lambda c: T(c, OP, seed=-1), ArgumentError, r"seed .*-1"),
    ("tune seed=1.5", lambda c: T(c, OP, seed=1.5), ArgumentError, r"seed .*1\.5"),
    ("tune seed=True", lambda c: T(c, OP, seed=True), ArgumentError, r"seed .*True"),
    ("tune threads=-1", lambda c: T(c, OP, threads=-1), ArgumentError, r"threads .*-1"),
    ("tune threads=0", lambda c: T(c, OP, threads=0), ArgumentError, r"threads .*got 0"),
    ("tune threads='abc'", lambda c: T(c, OP, threads="abc"), ArgumentError, r"threads .*'abc'"),
    ("tune threads=10**6", lambda c: T(c, OP, threads=10**6), ArgumentError, r"threads .*1000000"),
    ("tune retune='yes'", lambda c: T(c, OP, retune="yes"), ArgumentError, r"retune .*'yes'"),
    ("tune evaluator='nope'", lambda c: T(c, OP, evaluator="nope"), ArgumentError,
     r"evaluator .*'nope'"),
    ("tune evaluator=5", lambda c: T(c, OP, evaluator=5), ArgumentError, r"evaluator .*5"),
    ("tune records='nope'", lambda c: T(c, OP, records="nope"), ArgumentError, r"records .*'nope'"),
    ("tune records=5", lambda c: T(c, OP, records=5), ArgumentError, r"records .*5"),
    ("tune progress=5", lambda c: T(c, OP, progress=5), ArgumentError,
     r"progress .*int"),
    ("tune progress='yes'", lambda c: T(c, OP, progress="yes"),
     ArgumentError, r"progress .*str"),
    ("tune target='nope'", lambda c: T(c, OP, target="nope"), TargetError, r"'nope'"),
    ("tune target=5", lambda c: T(c, OP, target=5), TargetError, r"target must be .*5"),
    ("tune target=''", lambda c: T(c, OP, target=""), TargetError, r"target must be"),
    ("tune budget='abc'", lambda c: T(c, OP, budget="abc"), BudgetError, r"'abc'"),
    ("tune budget=-1", lambda c: T(c, OP, budget=-1), BudgetError, r"-1"),
    ("tune budget=0", lambda c: T(c, OP, budget=0), BudgetError, r"got 0"),
    ("tune budget=True", lambda c: T(c, OP, budget=True), BudgetError, r"True"),
    ("tune budget=None", lambda c: T(c, OP, budget=None), BudgetError, r"None"),
    ("tune budget='5 parsecs'", lambda c: T(c, OP, budget="5 parsecs"), BudgetError, r"5 parsecs"),
    ("tune strategy='gaa'", lambda c: T(c, OP, strategy="gaa"), SearchSettingsError, r"'gaa'"),
    ("tune strategy=5", lambda c: T(c, OP, strategy=5), SearchSettingsError, r"strategy must be"),
    ("tune cache_dir=a file", lambda c: T(c, OP, cache_dir=c.file("plain")), CacheError,
     r"cache_dir .*plain .*is a file"),
    ("tune cache_dir=5", lambda c: T(c, OP, cache_dir=5), ArgumentError, r"cache_dir must be"),
    ("tune cache_dir under a file", lambda c: T(c, OP, cache_dir=c.file("plain") / "sub"),
     CacheError, r"plain/sub"),
    ("tune arrays beyond memory", lambda c: T(c, no_memory()), OperatorArgumentError,
     r"huge\(.*more than this machine's memory"),
    # an unknown keyword is Python's own signature check: a TypeError that names it
    ("tune search='ga'", lambda c: T(c, OP, search="ga"), TypeError, r"unexpected keyword argument 'search'"),
    # load, load_kernel, records, the catalogue, prune_cache
    ("load None", lambda c: ek.load(None, cache_dir=c.cache), ArgumentError, r"operator must be .*NoneType"),
    ("load 'matmul'", lambda c: ek.load("matmul", cache_dir=c.cache), ArgumentError,
     r"got str; ek.cached_kernels\('matmul'\)"),
    ("load 5", lambda c: ek.load(5, cache_dir=c.cache), ArgumentError, r"operator must be .*int"),
    ("load target='nope'", lambda c: ek.load(OP, target="nope", cache_dir=c.cache), TargetError, r"'nope'"),
    ("load untuned", lambda c: ek.load(ops.relu(7), cache_dir=c.cache), NotTunedError, r"relu\(shape=7"),
    ("load_kernel None", lambda c: ek.load_kernel(None), ArgumentError, r"path must be .*None"),
    ("load_kernel ''", lambda c: ek.load_kernel(""), ArgumentError, r"path must be"),
    ("load_kernel 5", lambda c: ek.load_kernel(5), ArgumentError, r"path must be .*5"),
    ("load_kernel missing", lambda c: ek.load_kernel(c.tmp / "missing.ekb", cache_dir=c.cache), CacheError,
     r"no kernel bundle at .*missing.ekb"),
    ("load_kernel a directory", lambda c: ek.load_kernel(c.tmp, cache_dir=c.cache), CacheError,
     r"bad-inputs-files.* not a regular file"),
    ("load_kernel a FIFO", lambda c: ek.load_kernel(fifo(c), cache_dir=c.cache), CacheError,
     r"fifo.ekb .*not a regular file"),
    ("load_kernel garbage", lambda c: ek.load_kernel(c.file("garbage.ekb"), cache_dir=c.cache), CacheError,
     r"garbage.ekb is not a readable"),
    ("load_kernel truncated", lambda c: ek.load_kernel(c.file("cut.ekb", c.bundle.read_bytes()[:700]),
                                                        cache_dir=c.cache), CacheError, r"cut.ekb"),
    ("load_kernel deflate damage", lambda c: ek.load_kernel(deflate_damage(c), cache_dir=c.cache), CacheError,
     r"deflate.ekb"),
    ("load_kernel extra member", lambda c: ek.load_kernel(c.bundle_with("extra.ekb", replace_member("x", b"")),
                                                           cache_dir=c.cache), CacheError,
     r"extra.ekb is not an evokernel bundle"),
    ("load_kernel metadata bomb", lambda c: ek.load_kernel(c.bundle_with(
        "bomb.ekb", replace_member("meta.json", b" " * (65 << 20))), cache_dir=c.cache), CacheError,
     r"bomb.ekb: meta.json would inflate to 68157440 bytes"),
    ("load_kernel unsigned", lambda c: ek.load_kernel(c.bundle_with(
        "unsigned.ekb", lambda m: m.pop("SIGNATURE")), cache_dir=c.cache), UntrustedBundleError,
     r"unsigned.ekb: it is not signed"),
    ("load_kernel forged", lambda c: ek.load_kernel(c.bundle_with("forged.ekb", forged), cache_dir=c.cache),
     UntrustedBundleError, r"forged.ekb: its signature does not match"),
    ("load_kernel another cache's", lambda c: ek.load_kernel(c.bundle, cache_dir=c.tmp / "other"),
     UntrustedBundleError, r"relu.ekb: it is signed by key [0-9a-f]{64}"),
    ("load_kernel threads=-1", lambda c: ek.load_kernel(c.bundle, threads=-1, cache_dir=c.cache), ArgumentError,
     r"threads .*-1"),
    ("load_kernel trusted='yes'", lambda c: ek.load_kernel(c.bundle, trusted="yes", cache_dir=c.cache),
     ArgumentError, r"trusted must be"),
    ("load_kernel keys='abc'", lambda c: ek.load_kernel(c.bundle, keys="abc", cache_dir=c.cache), ArgumentError,
     r"keys must be a list"),
    ("load_kernel keys=['zz']", lambda c: ek.load_kernel(c.bundle, keys=["zz"], cache_dir=c.cache), ArgumentError,
     r"keys holds 'zz'"),
    ("records 5", lambda c: ek.records(5, cache_dir=c.cache), ArgumentError, r"operator must be .*int"),
    ("records target='nope'", lambda c: ek.records(OP, target="nope", cache_dir=c.cache), TargetError, r"'nope'"),
    ("cached_kernels 5", lambda c: ek.cached_kernels(5, cache_dir=c.cache), ArgumentError, r"operator must be.*5"),
    ("cached_kernels ''", lambda c: ek.cached_kernels("", cache_dir=c.cache), ArgumentError, r"operator must be"),
    ("cached_kernels target='nope'", lambda c: ek.cached_kernels(target="nope", cache_dir=c.cache), TargetError,
     r"'nope'"),
    ("cached load threads=0", lambda c: ek.cached_kernels(OP, cache_dir=c.cache)[0].load(threads=0), ArgumentError,
     r"threads .*got 0"),
    ("prune_cache dry_run='yes'", lambda c: ek.prune_cache(c.cache, dry_run="yes"), ArgumentError, r"dry_run must be"),
    ("prune_cache a file", lambda c: ek.prune_cache(c.file("plain")), CacheError, r"plain .*is a file"),
    # the Kernel: calls, reports, saving
    ("call no arrays", lambda c: c.kernel(), KernelCallError, r"takes 1 input arrays \(input\), got 0"),
    ("call two arrays", lambda c: c.kernel(x(), x()), KernelCallError, r"takes 1 input arrays"),
    ("call a list", lambda c: c.kernel([[0.0] * 40] * 4), KernelCallError, r"'input' must be a numpy.ndarray"),
    ("call float64", lambda c: c.kernel(x(dtype=np.float64)), KernelCallError, r"'input' must have dtype float32"),
    ("call shape", lambda c: c.kernel(x((40, 4))), KernelCallError, r"'input' must have shape \(4, 40\)"),
    ("call out shape", lambda c: c.kernel(x(), out=x((4, 4))), KernelCallError, r"'out' must have shape"),
    ("call out strided", lambda c: c.kernel(x(), out=x((4, 80))[:, ::2]), KernelCallError, r"out must be"),
    ("call out aliasing", lambda c: (lambda a: c.kernel(a, out=a))(x()), KernelCallError, r"out must not share"),
    ("report 'html'", lambda c: c.kernel.report("html"), ArgumentError, r"report format .*'html'"),
    ("save None", lambda c: c.kernel.save(None), ArgumentError, r"path must be .*None"),
    ("save key=5", lambda c: c.kernel.save(c.tmp / "k5.ekb", key=5), ArgumentError, r"key must be .*int"),
    ("save key=missing", lambda c: c.kernel.save(c.tmp / "k.ekb", key=c.tmp / "no.pem"), CacheError,
     r"key .*no.pem cannot be read"),
    # values of the search and targets
    ("Budget seconds=-1", lambda c: ek.Budget(seconds=-1), BudgetError, r"seconds .*-1"),
    ("Target 'x86-64-nonsense'", lambda c: ek.Target.parse("x86-64-linux-nonsense"), TargetError, r"nonsense"),
    ("SearchSettings mu=0", lambda c: ek.SearchSettings(mu=0), SearchSettingsError, r"mu must be"),
    ("SearchSettings crossover_rate=2", lambda c: ek.SearchSettings(crossover_rate=2), SearchSettingsError,
     r"crossover_rate must lie"),
    # a cache whose kernel metadata is damaged: set aside, and named
    ("cached stats: null", lambda c: ek.load(OP, cache_dir=c.damaged_entry(meta_edit(stats=None))), NotTunedError,
     r"its cache entry .*kernels/[0-9a-f]+ holds no usable metadata"),
    ("cached garbage genome", lambda c: ek.load(OP, cache_dir=c.damaged_entry(meta_edit(genome="garbage"))),
     NotTunedError, r"its cache entry .*kernels/[0-9a-f]+ holds no usable metadata"),
    ("cached meta.json not JSON", lambda c: ek.load(OP, cache_dir=c.damaged_entry(lambda p: p.write_text("{"))),
     NotTunedError, r"its cache entry .* holds no usable metadata"),
    ("cached meta.json a directory", lambda c: ek.load(OP, cache_dir=c.damaged_entry(
        lambda p: (p.unlink(), p.mkdir()))), NotTunedError, r"its cache entry .* holds no usable metadata"),
]

CLI = [
    ("cli unknown operator", ("tune", "nope"), ArgumentError, r"unknown operator 'nope'"),
    ("cli not key=value", ("tune", "matmul", "m"), ArgumentError, r"key=value, got 'm'"),
    ("cli m=0", ("tune", "matmul", "m=0", "n=4", "k=4"), OperatorArgumentError, r"\bm must be"),
    ("cli m=abc", ("tune", "matmul", "m=abc", "n=4", "k=4"), OperatorArgumentError, r"\bm must be .*'abc'"),
    ("cli unknown argument", ("tune", "matmul", "m=4", "n=4", "k=4", "q=1"), OperatorArgumentError, r"'q'"),
    ("cli dtype=none", ("tune", "matmul", "m=4", "n=4", "k=4", "dtype=none"), UnsupportedDtypeError, r"dtype None"),
    ("cli shape of 2^31", ("tune", "relu", "shape=2147483648"), OperatorArgumentError, r"'input' of shape"),
    ("cli --seed -1", ("tune", "relu", "shape=8", "--seed", "-1", "--evaluator", "local"), ArgumentError,
     r"seed .*-1"),
    ("cli --budget abc", ("tune", "relu", "shape=8", "--budget", "abc", "--evaluator", "local"), BudgetError,
     r"'abc'"),
    ("cli --target nope", ("tune", "relu", "shape=8", "--target", "nope", "--evaluator", "local"), TargetError,
     r"'nope'"),
    ("cli list --target nope", ("list", "--target", "nope"), TargetError, r"'nope'"),
    ("cli show nothing", ("show", "nothing_here"), NotTunedError, r"'nothing_here'"),
    ("cli show bad args", ("show", "relu", "shape=0"), OperatorArgumentError, r"shape must have positive"),
    ("cli export nothing", ("export", "c", "out", "--operator", "nothing_here"), NotTunedError, r"'nothing_here'"),
]

USAGE = [
    ("cli no operator", ("tune",), r"operator"),
    ("cli --evaluator nope", ("tune", "relu", "--evaluator", "nope"), r"--evaluator.*'nope'"),
    ("cli --strategy nope", ("tune", "relu", "--strategy", "nope"), r"--strategy.*'nope'"),
    ("cli --seed abc", ("tune", "relu", "--seed", "abc"), r"--seed.*'abc'"),
    ("cli export nope", ("export", "nope", "out"), r"'nope'"),
    ("cli unknown command", ("frobnicate",), r"'frobnicate'"),
    ("cli cache extra", ("cache", "--prune", "extra"), r"extra"),
]


def test_the_table_holds_a_hundred_bad_inputs():
    assert len(API) + len(CLI) + len(USAGE) >= 100
    assert len({name for name, *_ in API + CLI + USAGE}) == len(API) + len(CLI) + len(USAGE)


@pytest.mark.parametrize("call, kind, names", [row[1:] for row in API], ids=[row[0] for row in API])
def test_a_bad_input_to_the_api_raises_an_error_that_names_it(ctx, call, kind, names):
    with pytest.raises(kind) as raised:
        call(ctx)
    assert isinstance(raised.value, EvokernelError) or names.startswith("unexpected keyword"), type(raised.value)
    assert raised.value.__class__.__doc__, "every error class says what it reports"
    assert re.search(names, str(raised.value)), str(raised.value)


@pytest.mark.parametrize("argv, kind, names", [row[1:] for row in CLI], ids=[row[0] for row in CLI])
def test_a_bad_input_to_the_command_line_raises_an_error_that_names_it(ctx, capsys, argv, kind, names):
    with pytest.raises(kind, match=names) as raised:
        cli(ctx, *argv)
    assert isinstance(raised.value, EvokernelError)
    with cache_env(ctx.cache):  # without --debug: one line, status 2, not an internal error
        assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("evokernel: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(names, err), err


@pytest.mark.parametrize("argv, names", [row[1:] for row in USAGE], ids=[row[0] for row in USAGE])
def test_a_bad_command_line_is_a_usage_error_that_names_it(ctx, capsys, argv, names):
    with pytest.raises(SystemExit) as raised:
        cli(ctx, *argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert re.search(names, err), err


def test_damaged_metadata_is_moved_aside_and_named(ctx, caplog):
    root = ctx.damaged_entry(meta_edit(stats=None))
    with pytest.raises(NotTunedError):
        ek.load(OP, cache_dir=root)
    (aside,) = root.glob("kernels/*/meta.json.damaged-*")
    assert str(aside) in caplog.text and "'stats'" in caplog.text
    assert json.loads(aside.read_text())["stats"] is None, "what was set aside is kept as it was"
