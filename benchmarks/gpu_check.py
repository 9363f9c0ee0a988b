"""CUDA on a real NVIDIA GPU: tune gemm 2048³, conv2d 1×64×56×56→64 3×3 and softmax
4096×1000 for the GPU, check every winner against NumPy, and time it beside PyTorch
(cuBLAS/cuDNN, CUDA events) and Halide's GPU autoscheduler Anderson2021.

    python3 benchmarks/gpu_check.py --carry build/gpu-carry --out "$OUT"   # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-dry             # anywhere: all but the GPU

The GPU machine has NumPy and PyTorch but not Halide, DEAP or platformdirs:
``benchmarks/gpu_prepare.py`` packs what evokernel needs beyond what it has (Halide's
wheel recompressed with xz) into ``--carry``; this script checks and unpacks it into
a private directory put on ``sys.path`` (and ``PYTHONPATH``, for the worker processes)
before it imports evokernel. Tuning uses the ``local`` evaluator: no Ray.

The target is this CPU with ``-cuda`` and the highest ``cuda_capability_*`` Halide
knows that the device has (Halide 21 knows up to 86; an sm_90 H200 runs that PTX,
compiled for it by the driver). Every method is checked against NumPy on the same
inputs and timed with its data on the device, its first call (driver JIT) untimed:
evokernel's winner and Anderson2021's schedule in C (each call synchronised), PyTorch
with CUDA events, with its defaults (cuDNN may take TF32 tensor-core paths) and in
strict FP32 (TF32 off); the CUDA kernels PyTorch launched are recorded, to say which
path it took. Results go to ``--out`` as gpu_check.json and gpu_check.md, rewritten
after each operator (a run cut short keeps what it finished). ``--dry-run`` needs no
GPU: it compiles every method for the CUDA target and times nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, however it is loaded
from gpu_prepare import digest  # noqa: E402 - the digest the carry was written with

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "manifest.json"
OPERATORS = {  # name -> (description, constructor arguments)
    "gemm": ("gemm 2048³", ("matmul", dict(m=2048, n=2048, k=2048))),
    "conv2d": ("conv2d 1×64×56×56→64 3×3 pad 1",
               ("conv2d", dict(n=1, c_in=64, h=56, w=56, c_out=64, k=3, pad=1))),
    "softmax": ("softmax 4096×1000", ("softmax", dict(shape=(4096, 1000)))),
}
H200_SMS = 132  # Anderson2021's parallelism in a dry run (the device's SM count otherwise)


class GpuCheckError(Exception):
    """A problem this script reports in one line (exit status 2)."""


# -- the carried packages -------------------------------------------------------------
def unpack(carry: Path, site: Path) -> Path:
    """Check every file of the carry against its manifest and unpack it into
    ``site``: ``.tar.xz`` archives and wheels (zips) alike. Raises ``GpuCheckError``
    for a missing or damaged carry, or one made for another Python."""
    manifest_path = Path(carry) / MANIFEST
    if not manifest_path.is_file():
        raise GpuCheckError(f"no carried packages in {carry} (no {MANIFEST}): run benchmarks/gpu_prepare.py on a "
                            "machine with a package index and carry its output")
    try:
        manifest = json.loads(manifest_path.read_text())
        python, files = manifest["python"], manifest["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise GpuCheckError(f"{manifest_path} is not a carry manifest: {error}") from None
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python != here:
        raise GpuCheckError(f"the carried packages are for Python {python}, this is Python {here}: "
                            f"rerun gpu_prepare.py --python {here}")
    site.mkdir(parents=True, exist_ok=True)
    for entry in files:
        path = Path(carry) / entry["name"]
        if not path.is_file():
            raise GpuCheckError(f"{path} is missing from the carry")
        if digest(path) != entry["sha256"]:
            raise GpuCheckError(f"{path} is damaged: its SHA-256 differs from the manifest's")
        if entry["name"].endswith(".tar.xz"):
            with tarfile.open(path, "r:xz") as archive:
                if hasattr(tarfile, "data_filter"):
                    archive.extractall(site, filter="data")
                else:  # pragma: no cover - Python before 3.11.4
                    archive.extractall(site)
        elif entry["name"].endswith(".whl"):
            with zipfile.ZipFile(path) as wheel:
                wheel.extractall(site)
        else:
            raise GpuCheckError(f"{path}: unknown kind of carried file")
    for so in site.rglob("*.so*"):  # zips do not keep the execute bit
        so.chmod(so.stat().st_mode | 0o755)
    return site


def activate(site: Path | None) -> None:
    """Put ``site`` (if any) and this repository first on ``sys.path`` and on
    ``PYTHONPATH``, which the worker and autoscheduler processes inherit."""
    paths = ([str(site)] if site is not None else []) + [str(ROOT)]
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    inherited = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([inherited] if inherited else []))


# -- the target ---------------------------------------------------------------------------
def known_capabilities() -> list[int]:
    """The CUDA compute capabilities Halide knows (``cuda_capability_NN``)."""
    import halide as hl

    names = [n for n in dir(hl.TargetFeature) if n.startswith("CUDACapability")]
    return sorted(int(n.removeprefix("CUDACapability")) for n in names if n.removeprefix("CUDACapability").isdigit())


def cuda_target(capability: int) -> str:
    """This CPU's target with ``-cuda`` and the highest capability feature Halide
    knows that a device of ``capability`` (e.g. 90 for sm_90) has."""
    import halide as hl

    usable = [c for c in known_capabilities() if c <= capability]
    if not usable:
        raise GpuCheckError(f"Halide knows no CUDA capability at or below {capability} "
                            f"(it knows {known_capabilities()})")
    target = hl.Target(f"{hl.get_host_target().to_string()}-cuda-cuda_capability_{usable[-1]}")
    return target.to_string()


def c_compiler() -> str:
    """``$CC``, else the first of cc, gcc and clang here (evokernel links every
    kernel with one; ``$CC`` is set to it), or ``GpuCheckError``."""
    import shutil

    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    found = next((n for n in names if shutil.which(n)), None)
    if found is None:
        raise GpuCheckError(f"no C compiler ({', '.join(names)}) on this machine: evokernel links every kernel "
                            "with one")
    os.environ["CC"] = found
    return found


def cuda_device() -> dict:
    """The CUDA device PyTorch sees, or ``GpuCheckError``."""
    try:
        import torch
    except ImportError:
        raise GpuCheckError("PyTorch is not installed: the GPU check times PyTorch beside evokernel") from None
    if not torch.cuda.is_available():
        raise GpuCheckError("no CUDA device: torch.cuda.is_available() is False (run with --dry-run to check "
                            "everything but the GPU)")
    props = torch.cuda.get_device_properties(0)
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": props.name, "capability": major * 10 + minor, "sms": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}


# -- timing -------------------------------------------------------------------------------
def median_ms(samples) -> float:
    ordered = sorted(samples)
    middle = len(ordered) // 2
    return 1e3 * (ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2)


def time_native(kernel, arrays, min_seconds: float = 0.5) -> float:
    """Median ms of a Halide kernel's calls, timed in C (each synchronised; the
    data stays on the device between the calls of a batch)."""
    samples, spent, batch = [], 0.0, 1
    while spent < min_seconds or len(samples) < 10:
        times = list(kernel.time([arrays], batch))
        samples += times[1:] if batch > 1 else times  # a batch's first call copies the inputs over
        spent += sum(times)
        batch = min(batch * 2, 256)
    return median_ms(samples)


def time_torch(fn, min_seconds: float = 0.5) -> float:
    """Median ms of ``fn()`` on the device, by CUDA events around batches of calls."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples, spent, calls = [], 0.0, 1
    while spent < min_seconds or len(samples) < 10:
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        samples.append(seconds / calls)
        spent += seconds
        calls = min(calls * 2, 64) if seconds < 0.02 else calls
    return median_ms(samples)


def torch_function(name: str, tensors):
    """The operator in PyTorch on device tensors (the output preallocated where it can be)."""
    import torch
    import torch.nn.functional as F

    if name == "gemm":
        a, b = tensors
        out = torch.empty(a.shape[0], b.shape[1], device=a.device)
        return lambda: torch.matmul(a, b, out=out)
    if name == "conv2d":
        (x, w) = tensors
        return lambda: F.conv2d(x, w, None, 1, 1)
    (x,) = tensors
    return lambda: torch.softmax(x, dim=-1)


def torch_kernels(fn) -> list[str]:
    """The CUDA kernels one call of ``fn`` launches (their names say the path taken:
    cuBLAS/cuDNN, SIMT FP32 or tensor cores)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})


def run_torch(name: str, op, inputs, reference, strict_fp32: bool) -> dict:
    import numpy as np
    import torch

    from evokernel.evaluators import check

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if strict_fp32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        fn = torch_function(name, [torch.from_numpy(a).cuda() for a in inputs])
        out = fn().cpu().numpy()
        good, error = check(np.ascontiguousarray(out), reference, *op.tolerance)
        entry = {"status": "ok" if good else "wrong", "max_error": error, "ms": time_torch(fn),
                 "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}
        try:
            entry["kernels"] = torch_kernels(fn)
        except Exception as failure:  # the profiler is a nicety: say why it is missing
            entry["kernels_error"] = f"{type(failure).__name__}: {failure}"
        return entry
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# -- one operator -------------------------------------------------------------------------
def make_operator(name: str):
    import evokernel as ek

    family, kwargs = OPERATORS[name][1]
    return getattr(ek.operators, family)(**kwargs)


class Methods:
    """Halide objects linked against one runtime for the target, callable and timed in C."""

    def __init__(self, op, target: str, cache: Path):
        from evokernel.codegen import default_threads, load_runtime, native_runtime

        self.op = op
        self.dir, self.runtime = native_runtime(cache, target)
        self.lib = load_runtime(self.runtime, default_threads())
        specs = (*op.inputs, op.output)
        self.shapes, self.dtypes = [s.shape for s in specs], [s.dtype for s in specs]

    def run(self, object_bytes: bytes, inputs, reference) -> dict:
        import numpy as np

        from evokernel.codegen import FUNCTION, NativeKernel, link_kernel
        from evokernel.evaluators import check

        kernel = NativeKernel(link_kernel(object_bytes, self.runtime, self.dir), FUNCTION, self.lib, self.shapes,
                              self.dtypes)
        out = np.full(self.op.output.shape, np.nan, self.op.output.dtype)
        arrays = [*inputs, out]
        kernel(arrays)  # untimed: the driver compiles the PTX; and the check
        good, error = check(out, reference, *self.op.tolerance)
        return {"status": "ok" if good else "wrong", "max_error": error, "ms": time_native(kernel, arrays)}


def anderson2021(op, target: str, sms: int, timeout: float) -> "tuple[object, dict]":
    from evokernel.bench import compile_isolated

    compiled = compile_isolated(op, "Anderson2021", target, sms, timeout=timeout)
    entry = {"compile_seconds": round(compiled.seconds, 1)}
    if not compiled.ok:
        entry.update(status="failed", error=compiled.error)
    return compiled, entry


def check_operator(name: str, target: str, device: dict, seconds: float, cache: Path) -> dict:
    """Tune, check and time one operator on the GPU."""
    import numpy as np

    import evokernel as ek
    from evokernel.evaluators import check

    op = make_operator(name)
    row = {"operator": OPERATORS[name][0], "key": op.key}
    start = time.perf_counter()
    kernel = ek.tune(op, target, budget=f"{seconds:g}s", seed=0, evaluator="local", cache_dir=cache, progress=False)
    s = kernel.stats
    row["tune"] = {"seconds": round(time.perf_counter() - start, 1), "evaluations": len(s.history),
                   "outcomes": s.outcomes, "tuned_ms": kernel.time_ms,
                   "baseline_ms": s.baseline * 1e3 if s.baseline else None}
    row["schedule"] = kernel.schedule
    log(f"{name}: tuned in {row['tune']['seconds']} s, {len(s.history)} evaluations, {kernel.time_ms:.4g} ms")

    inputs = op.random_inputs(np.random.default_rng(1))  # not the inputs it was tuned on
    reference = np.asarray(op.reference(*inputs), dtype=op.dtype)
    good, error = check(kernel(*inputs), reference, *op.tolerance)  # the public call: copies in and out
    methods = Methods(op, target, cache)
    row["evokernel"] = {**methods.run(kernel.object_bytes, inputs, reference), "call_status": "ok" if good else "wrong",
                        "call_max_error": error}
    log(f"{name}: evokernel {row['evokernel']['ms']:.4g} ms, max error {error:.3g}")

    compiled, row["anderson2021"] = anderson2021(op, target, device["sms"], timeout=180)
    if compiled.ok:
        row["anderson2021"].update(methods.run(compiled.object_bytes, inputs, reference))
        log(f"{name}: Anderson2021 {row['anderson2021']['ms']:.4g} ms")
    for label, strict in (("torch", False), ("torch_fp32", True)):
        row[label] = run_torch(name, op, inputs, reference, strict)
        log(f"{name}: {label} {row[label]['ms']:.4g} ms")
    ours = row["evokernel"]["ms"]
    row["ratios"] = {f"{m}_over_evokernel": row[m]["ms"] / ours for m in ("anderson2021", "torch", "torch_fp32")
                     if "ms" in row[m]}
    return row


def dry_run_operator(name: str, target: str, sms: int, cache: Path) -> dict:
    """Everything but the GPU: evokernel's GPU-mapped schedule and Anderson2021's,
    each compiled for the CUDA target (PTX embedded in the object)."""
    import evokernel as ek

    op = make_operator(name)
    row = {"operator": OPERATORS[name][0], "key": op.key, "status": "dry run: compiled, not run"}
    compiled = ek.compile_for(op, target, cache / f"{name}.o", header=False)
    data = compiled.path.read_bytes()
    row["evokernel"] = {"status": "compiled", "ptx": b".target sm_" in data and b".entry" in data,
                        "gpu_mapped": "gpu_blocks" in compiled.schedule and "gpu_threads" in compiled.schedule}
    result, row["anderson2021"] = anderson2021(op, target, sms, timeout=300)
    if result.ok:
        row["anderson2021"].update(status="compiled", ptx=b".target sm_" in result.object_bytes)
    return row


# -- the report ---------------------------------------------------------------------------
def fmt(entry: dict) -> str:
    if "ms" in entry:
        return f"{entry['ms']:.4g}" + ("" if entry.get("status", "ok") == "ok" else f" ({entry['status']})")
    return entry.get("status", "-")


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [f"GPU check, {report['date']}: {machine.get('gpu', 'no GPU (dry run)')}, target `{report['target']}`, "
             f"Halide {machine['halide']}, torch {machine.get('torch', '-')}, {report['seconds']:g} s of tuning each",
             "",
             "| operator | evokernel ms | Anderson2021 ms | torch ms (default) | torch ms (FP32) "
             "| evokernel max error |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in report["operators"]:
        ours = row["evokernel"]
        error = f"{ours['max_error']:.2g}" if "max_error" in ours else "-"
        lines.append(f"| {row['operator']} | {fmt(ours)} | {fmt(row['anderson2021'])} | "
                     f"{fmt(row.get('torch', {}))} | {fmt(row.get('torch_fp32', {}))} | {error} |")
    paths = [f"- {row['operator']}: torch ran {', '.join(row['torch']['kernels'][:3])}"
             for row in report["operators"] if row.get("torch", {}).get("kernels")]
    return "\n".join(lines + ([""] + paths if paths else [])) + "\n"


def write(out: Path, report: dict) -> None:
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(report))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- main ---------------------------------------------------------------------------------
def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carry", type=Path,
                        help="the directory gpu_prepare.py wrote (default: use what is installed)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check")),
                        help="where gpu_check.json and gpu_check.md go (default: $OUT)")
    parser.add_argument("--seconds", type=float, default=90.0, help="tuning budget per operator (default 90)")
    parser.add_argument("--ops", default=",".join(OPERATORS), help=f"operators, of {', '.join(OPERATORS)}")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: compile every method, time nothing")
    parser.add_argument("--capability", type=int, default=90,
                        help="the device's compute capability in a dry run (default 90: an H200)")
    args = parser.parse_args(argv)
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in args.ops if o not in OPERATORS]
    if unknown or not args.ops:
        raise GpuCheckError(f"--ops takes some of {', '.join(OPERATORS)}, got {', '.join(unknown) or 'none'}")
    if args.seconds <= 0:
        raise GpuCheckError(f"--seconds must be positive, got {args.seconds:g}")
    return args


def run(args: argparse.Namespace) -> dict:
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=args.out)
        probe.close()
    except OSError as error:
        raise GpuCheckError(f"cannot write to --out {args.out}: {error}") from None
    site = unpack(args.carry, Path(tempfile.mkdtemp(prefix="gpu-check-site-"))) if args.carry else None
    activate(site)
    cache = Path(tempfile.mkdtemp(prefix="gpu-check-cache-"))  # private (0700), as evokernel requires
    os.environ["EVOKERNEL_CACHE_DIR"] = str(cache)
    device = None if args.dry_run else cuda_device()
    compiler = None if args.dry_run else c_compiler()
    import halide as hl

    target = cuda_target(args.capability if device is None else device["capability"])
    machine = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
               "halide": getattr(hl, "__version__", None) or _version("halide"), "cc": compiler}
    if device is not None:
        machine.update(gpu=device["name"], **{k: v for k, v in device.items() if k != "name"})
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "target": target, "seconds": args.seconds,
              "dry_run": args.dry_run, "machine": machine, "operators": []}
    log(f"target {target}" + (f" on {device['name']} (sm_{device['capability']})" if device else " (dry run)"))
    for name in args.ops:
        row = (dry_run_operator(name, target, H200_SMS, cache) if args.dry_run
               else check_operator(name, target, device, args.seconds, cache))
        report["operators"].append(row)
        write(args.out, report)
    print(markdown(report), flush=True)
    return report


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main(argv=None) -> int:
    try:
        run(parse(argv))
    except GpuCheckError as error:
        print(f"gpu_check: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
