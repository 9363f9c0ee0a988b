"""Export tuned kernels as a C library: ``<name>.h``, ``lib<name>.so``, ``lib<name>.a``.

Every kernel object defines the same symbols (``evokernel_kernel``, its ``_argv``
and ``_metadata`` entry points and global parallel-loop closures
``evokernel_kernel_par_for_*``), so each is renamed before linking. Renaming with
``objcopy --redefine-syms`` was chosen over rebuilding from ``operator`` + ``genome``
under a new function name: measured on a 3x3 conv (16->32 channels, 28x28) on a
2-core AMD Zen 5 machine (2026-11), renaming takes 10 ms (median of 15) against 500 ms for a rebuild
(``compile_for`` without runtime, median of 8); it ships the exact bytes that were
tuned and checked; and it works for kernels loaded from bundles whose operator code
is not at hand.

The objects, a standalone Halide runtime for the kernels' target and the generated C
wrappers are merged into one relocatable object in which only the public API stays
global (``objcopy --keep-global-symbols``): the shared and the static library both
carry a private Halide runtime that cannot clash with another in the same process.

``target=`` exports for another target than the kernels were tuned on: each tuned
schedule is compiled for it (``Kernel.compile_for``) and, for another platform
(``arm-64-linux`` on an x86 machine), compiled, merged and linked with that
platform's cross toolchain (``evokernel.codegen.toolchain``).
"""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from importlib import metadata, resources
from pathlib import Path

from ..codegen import FUNCTION, run_tool, toolchain
from ..errors import EvokernelError, ExportError
from ..store import Kernel
from ..target import Target

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_NAME = 96  # longer names derived from operator keys end in a hash instead
_C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern float for goto
if inline int long register restrict return short signed sizeof static struct switch typedef union unsigned void
volatile while _Bool _Complex _Imaginary _Alignas _Alignof _Atomic _Generic _Noreturn _Static_assert
_Thread_local bool true false""".split())
_C_TYPES = {"float32": ("float", 32), "float64": ("double", 64)}


@dataclass(frozen=True)
class CLibrary:
    """The files ``export_c`` wrote."""

    header: Path
    shared: Path
    static: Path


@dataclass(frozen=True)
class ExportedKernel:
    """One exported kernel: its public C function and argument names."""

    name: str
    kernel: Kernel
    args: tuple[str, ...]  # C parameter names: the inputs, then the output
    target: Target  # what the exported code is compiled for
    object_bytes: bytes  # the kernel's object for ``target``: the tuned one, or its schedule compiled for it

    @property
    def symbol(self) -> str:
        """The kernel's own (renamed, private) Halide function."""
        return f"{self.name}__halide"

    @property
    def ctype(self) -> str:
        return _C_TYPES[self.kernel.signature.output.dtype][0]

    @property
    def specs(self):
        return (*self.kernel.signature.inputs, self.kernel.signature.output)

    def prototype(self) -> str:
        params = [f"const {self.ctype} *{a}" for a in self.args[:-1]] + [f"{self.ctype} *{self.args[-1]}"]
        return f"int {self.name}({', '.join(params)})"


# -- names -------------------------------------------------------------------------
def check_identifier(name, what: str) -> str:
    """Return ``name`` if it is a valid C identifier (not a keyword), else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or name in _C_KEYWORDS:
        raise ExportError(f"{what} must be a C identifier (letters, digits, underscores; not starting "
                          f"with a digit; not a C keyword), got {name!r}")
    return name


def sanitize(text: str) -> str:
    """Lower-case letters, digits and single underscores only.

    >>> sanitize("conv2d(n=1,kernel=3x3,activation=None)")
    'conv2d_n1_kernel3x3_activationnone'
    """
    text = re.sub(r"[^a-z0-9]+", "_", text.lower().replace("=", ""))
    return text.strip("_")


def _unique(names: Iterable[str]) -> list[str]:
    """Make names unique (ignoring case): a repeat gets the suffix ``_2``, ``_3``..."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, i = name, 1
        while candidate.lower() in seen:
            i += 1
            candidate = f"{name}_{i}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def _derived_name(prefix: str, key: str) -> str:
    name = f"{prefix}_{sanitize(key) or 'kernel'}"
    if len(name) > _MAX_NAME:
        name = f"{name[:_MAX_NAME - 9].rstrip('_')}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    return name


def _arg_names(specs) -> tuple[str, ...]:
    names = []
    for i, spec in enumerate(specs):
        name = sanitize(spec.name)
        names.append(name if _IDENTIFIER.match(name) and name not in _C_KEYWORDS else f"arg{i}")
    return tuple(_unique(names))


def entries(kernels, prefix: str, target=None) -> list[ExportedKernel]:
    """Check ``kernels`` (a list of ``Kernel``, a mapping of C names to them, or an
    ``ek.TunedModel``: all its kernels) and
    name their C functions: ``<prefix>_<name>`` for a mapping, else a name derived
    from each operator key (sanitized, unique). With ``target``, every kernel's
    schedule is compiled for it (kernels of several targets may then share a
    library); without, the kernels' own objects are used, all of one target."""
    check_identifier(prefix, "the library name")
    if target is not None:
        target = Target.parse(target)
        if target.is_gpu:
            raise ExportError(f"target {target.string}: only CPU targets export to C")
    if isinstance(kernels, Kernel):
        kernels = [kernels]
    kernels = getattr(kernels, "kernels", kernels)  # a tuned network (ek.TunedModel) exports all its kernels
    if isinstance(kernels, Mapping):
        names = [f"{prefix}_{check_identifier(n, 'a kernel name')}" for n in kernels]
        kernels = list(kernels.values())
    else:
        if isinstance(kernels, (str, bytes)) or not isinstance(kernels, Iterable):
            raise ExportError(f"expected a list of Kernel objects, got {type(kernels).__name__}")
        kernels = list(kernels)
        names = None
    if not kernels:
        raise ExportError("nothing to export: the list of kernels is empty")
    for i, k in enumerate(kernels):
        if not isinstance(k, Kernel):
            raise ExportError(f"item {i} is a {type(k).__name__}, not a Kernel (from ek.tune or ek.load)")
    targets = sorted({k.target.string for k in kernels})
    if len(targets) > 1 and target is None:
        raise ExportError(f"kernels of different targets cannot share one library: {', '.join(targets)} "
                          "(pass target= to compile them all for one)")
    for k in kernels:
        if k.signature.output.dtype not in _C_TYPES or (target is None and k.target.is_gpu):
            raise ExportError(f"{k.signature.key} on {k.target}: only CPU kernels on float32/float64 export to C")
    if names is None:
        names = _unique(_derived_name(prefix, k.signature.key) for k in kernels)
    elif len({n.lower() for n in names}) < len(names):
        raise ExportError(f"kernel names must differ (ignoring case): {', '.join(names)}")
    for name in names:  # '__' is kept for the library's internal symbols
        if "__" in name or name in (f"{prefix}_set_num_threads", f"{prefix}_last_error"):
            raise ExportError(f"kernel name {name!r} is reserved (it holds '__' or names a library function)")
    return [ExportedKernel(n, k, _arg_names((*k.signature.inputs, k.signature.output)), *_compiled(k, target))
            for n, k in zip(names, kernels)]


def _compiled(kernel: Kernel, target: Target | None) -> tuple[Target, bytes]:
    """The kernel's object for ``target`` (``None``: its own): the tuned bytes, or
    its schedule compiled for ``target`` without a runtime."""
    if target is None or target == kernel.target:
        return kernel.target, kernel.object_bytes
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = kernel.compile_for(target, Path(tmp, "kernel.o"), header=False, runtime=False)
        except EvokernelError as error:
            raise ExportError(f"cannot compile {kernel.signature.key} for {target.string}: {error}") from error
        return target, out.path.read_bytes()


# -- C source ---------------------------------------------------------------------
def comment(text: str) -> str:
    """``text`` made safe inside a C comment: printable ASCII, no ``*/``."""
    text = "".join(c if " " <= c <= "~" else "?" for c in str(text))
    return text.replace("*/", "* /").replace("/*", "/ *")


def wrappers(items: list[ExportedKernel], prefix: str) -> str:
    """C source: the support code and one raw-pointer function per kernel."""
    parts = [f"#define EK_PREFIX {prefix}", _support_source()]
    for e in items:
        shapes = [f"static const int32_t {e.name}__shape{i}[] = {{{', '.join(map(str, s.shape))}}};"
                  for i, s in enumerate(e.specs)]
        bits = _C_TYPES[e.kernel.signature.output.dtype][1]
        buffers = ", ".join(f"ek_buffer(&ek__b[{i}], ek__d[{i}], {a}, {len(s.shape)}, {e.name}__shape{i}, {bits})"
                            for i, (a, s) in enumerate(zip(e.args, e.specs)))
        rank = max(len(s.shape) for s in e.specs)
        parts.append("\n".join([
            f"extern int {e.symbol}({', '.join(['halide_buffer_t *'] * len(e.specs))});",
            *shapes,
            f"EK_PUBLIC {e.prototype()} {{",
            f"    halide_buffer_t ek__b[{len(e.specs)}];  /* sanitized names never hold '__' */",
            f"    halide_dimension_t ek__d[{len(e.specs)}][{rank}];",
            f"    if ({' || '.join(f'!{a}' for a in e.args)}) return ek_null_argument(\"{e.name}\");",
            f"    return {e.symbol}({buffers});",
            "}",
        ]))
    return "\n\n".join(parts) + "\n"


def header(items: list[ExportedKernel], prefix: str) -> str:
    """The documented C header of the exported functions."""
    guard = f"{prefix.upper()}_H"
    target = items[0].target.string
    lines = [
        f"/* {prefix}.h: {len(items)} kernel(s) tuned by evokernel {metadata.version('evokernel')} for",
        f" * target {comment(target)}.",
        " *",
        " * Every function takes dense row-major arrays (C order: NumPy's layout, NCHW for",
        " * images) of exactly the shapes listed, the inputs first and the output last,",
        " * and returns 0, or a negative Halide error code (halide_error_code_t; -12: a",
        f" * NULL pointer) whose message {prefix}_last_error() returns. The output must",
        " * not overlap an input. Functions may be called from several threads.",
        f" * Link: -l{prefix} (shared), or lib{prefix}.a -lpthread -ldl -lm (static).",
        " */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        "/* Worker threads of the kernels' thread pool (0: one per core); returns the old count. */",
        f"int {prefix}_set_num_threads(int n);",
        "",
        "/* The message of this thread's last failed call. */",
        f"const char *{prefix}_last_error(void);",
    ]
    for e in items:
        sig = e.kernel.signature
        where = "" if e.kernel.target == e.target else f" on {comment(e.kernel.target.string)}"
        lines += ["", f"/* {comment(sig.key)}", f" * tuned{where}: {e.kernel.time_ms:.4g} ms per call"]
        for i, (arg, spec) in enumerate(zip(e.args, e.specs)):
            dims = "".join(f"[{d}]" for d in spec.shape)
            role = "output" if i == len(e.specs) - 1 else "input"
            lines.append(f" *   {arg:<8} {spec.dtype}{dims}  {role} {comment(spec.name)!r}")
        lines += [" */", f"{e.prototype()};"]
        lines += [f"#define {e.name.upper()}_{a.upper()}_SIZE {math.prod(s.shape)}" for a, s in zip(e.args, e.specs)]
    macros = [line.split()[1] for line in lines if line.startswith("#define ")]
    if len(set(macros)) < len(macros):
        raise ExportError(f"kernel and argument names give clashing size macros in {prefix}.h: rename the kernels")
    lines += ["", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


@cache
def _support_source() -> str:
    return resources.files(__package__).joinpath("_support.c").read_text()


# -- building ---------------------------------------------------------------------
_run = partial(run_tool, error=ExportError)


def _tools(target: Target):
    """The toolchain of ``target``'s platform (this machine's, or a cross toolchain)."""
    try:
        return toolchain(target)
    except EvokernelError as error:  # a platform without a known cross toolchain
        raise ExportError(str(error)) from error


def _tool(target: Target, name: str) -> str:
    """A binutils program of ``target``'s platform."""
    return _tools(target).tool(name, ExportError)


def _cc(target: Target) -> str:
    """The C compiler of ``target``'s platform."""
    return _tools(target).cc(ExportError)


@cache
def runtime_object(target: str) -> bytes:
    """A standalone Halide runtime object for ``target`` (compiled once per process)."""
    import halide as hl

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "runtime.o")
        hl.compile_standalone_runtime(str(path), hl.Target(target))
        return path.read_bytes()


def _renamed(entry: ExportedKernel, tmp: Path) -> Path:
    """The kernel's object with its global symbols renamed from ``evokernel_kernel``."""
    obj = tmp / f"{entry.name}.o"
    obj.write_bytes(entry.object_bytes)
    # readelf, not nm: nm loads the LTO plugins first (~100 ms a call here, readelf ~8 ms)
    table = subprocess.run([_tool(entry.target, "readelf"), "-Ws", str(obj)], capture_output=True, text=True)
    if table.returncode != 0:
        raise ExportError(f"cannot read the symbols of {entry.kernel.signature.key}'s object: {table.stderr.strip()}")
    rows = [line.split() for line in table.stdout.splitlines()]  # Num Value Size Type Bind Vis Ndx Name
    symbols = [r[7] for r in rows if len(r) == 8 and r[4] == "GLOBAL" and r[6] != "UND" and r[7].startswith(FUNCTION)]
    if FUNCTION not in symbols:
        raise ExportError(f"{entry.kernel.signature.key}'s object does not define {FUNCTION}")
    mapping = tmp / f"{entry.name}.syms"
    mapping.write_text("".join(f"{s} {entry.symbol}{s[len(FUNCTION):]}\n" for s in symbols))
    _run([_tool(entry.target, "objcopy"), f"--redefine-syms={mapping}", str(obj)])
    return obj


def combined_object(items: list[ExportedKernel], source: str, public: list[str], tmp: Path,
                    includes: Iterable[Path] = ()) -> Path:
    """Compile ``source``, merge it with the renamed kernels and a Halide runtime into
    one object whose only global definitions are ``public``."""
    import halide as hl

    target = items[0].target
    cc = _cc(target)
    runtime = tmp / "halide_runtime.o"
    runtime.write_bytes(runtime_object(target.string))
    src, glue = tmp / "exported.c", tmp / "exported.o"
    src.write_text(source)
    includes = [Path(hl.__file__).parent / "include", *includes]
    strict = ["-Werror"] if len(includes) == 1 else []  # other people's headers may warn
    _run([cc, "-std=gnu11", "-O2", "-fPIC", "-Wall", *strict, *(f"-I{p}" for p in includes), "-c", str(src),
          "-o", str(glue)])
    merged, keep = tmp / "merged.o", tmp / "public.syms"
    _run([cc, "-r", "-nostdlib", "-o", str(merged), str(glue), *(str(_renamed(e, tmp)) for e in items),
          str(runtime)])
    keep.write_text("".join(f"{name}\n" for name in public))
    _run([_tool(target, "objcopy"), f"--keep-global-symbols={keep}", str(merged)])
    return merged


def link_shared(obj: Path, path: Path, target: Target) -> None:
    """Link the merged object into a shared library for ``target``'s platform."""
    _run([_cc(target), "-shared", "-o", str(path), str(obj), f"-Wl,-soname,{path.name}", "-lpthread", "-ldl", "-lm"])


def output_dir(directory) -> Path:
    """``directory``, created, or an ``ExportError`` saying why it cannot be used."""
    try:
        path = Path(directory).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".evokernel-probe")
        probe.close()
    except (OSError, TypeError) as error:
        raise ExportError(f"cannot write to {directory!r}: {error}") from error
    return path


# -- the public function ------------------------------------------------------------
def export_c(kernels, directory, name: str = "evokernel", target=None) -> CLibrary:
    """Write ``<name>.h``, ``lib<name>.so`` and ``lib<name>.a`` into ``directory``:
    one C function per kernel, on raw pointers in the operator's NumPy layout.

    ``kernels`` is a list of ``Kernel`` (function names derived from their operator
    keys) or a mapping of C names to kernels (``{"conv": k}`` gives
    ``<name>_conv``), all for one target. The library carries its own Halide
    runtime and exports only the kernels, ``<name>_set_num_threads`` and
    ``<name>_last_error``. ``target`` (a CPU target, e.g. ``"arm-64-linux"``)
    compiles every kernel's schedule for that target instead; code for another
    platform is linked with its cross toolchain (``aarch64-linux-gnu-gcc``).

    >>> import tempfile, evokernel as ek
    >>> kernel = ek.tune(ek.operators.relu((4, 8)), budget=2, seed=0, evaluator="local")
    >>> lib = ek.export_c({"relu": kernel}, tempfile.mkdtemp(), name="demo")
    >>> "int demo_relu(const float *input, float *out);" in lib.header.read_text()
    True
    """
    items = entries(kernels, name, target)
    directory = output_dir(directory)
    public = [e.name for e in items] + [f"{name}_set_num_threads", f"{name}_last_error"]
    files = CLibrary(directory / f"{name}.h", directory / f"lib{name}.so", directory / f"lib{name}.a")
    with tempfile.TemporaryDirectory(dir=directory, prefix=".evokernel-export") as tmp:
        tmp = Path(tmp)
        obj = combined_object(items, wrappers(items, name), public, tmp)
        link_shared(obj, tmp / files.shared.name, items[0].target)
        _run([_tool(items[0].target, "ar"), "rcs", str(tmp / files.static.name), str(obj)])
        (tmp / files.header.name).write_text(header(items, name))
        for path in (files.shared, files.static, files.header):
            (tmp / path.name).replace(path)
    return files
