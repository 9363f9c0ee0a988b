"""Calling a Kernel: wrong calls raise KernelCallError naming the problem; any
layout of valid inputs gives the right answer; ``out=`` is written and returned."""

from __future__ import annotations

import numpy as np
import pytest
from _families import assert_close, fresh_inputs

import evokernel as ek
from evokernel.errors import KernelCallError, UnsupportedDtypeError

M, N, K = 31, 43, 17


@pytest.fixture(scope="module")
def matmul(tuned):
    op = ek.operators.matmul(M, N, K)
    return op, tuned(op, budget=3)


@pytest.fixture(scope="module")
def relu(tuned):
    op = ek.operators.relu((6, 11))
    return op, tuned(op, budget=2)


def inputs(op, seed=0):
    return fresh_inputs(op, seed)


# -- wrong calls --------------------------------------------------------------------

def test_wrong_number_of_arrays(matmul):
    op, kernel = matmul
    a, b = inputs(op)
    with pytest.raises(KernelCallError, match=r"takes 2 input arrays \(A, B\), got 1"):
        kernel(a)
    with pytest.raises(KernelCallError, match="got 3"):
        kernel(a, b, b)
    with pytest.raises(KernelCallError, match="got 0"):
        kernel()


def test_wrong_shape_names_the_array_and_both_shapes(matmul):
    op, kernel = matmul
    a, b = inputs(op)
    with pytest.raises(KernelCallError, match=r"'B' must have shape \(17, 43\), got \(43, 17\)"):
        kernel(a, b.T.copy())
    with pytest.raises(KernelCallError, match="'A' must have shape"):
        kernel(a[:-1], b)
    with pytest.raises(KernelCallError, match="shape"):
        kernel(a.reshape(-1), b)


def test_wrong_dtype_names_both_dtypes(matmul):
    op, kernel = matmul
    a, b = inputs(op)
    with pytest.raises(KernelCallError, match="'A' must have dtype float32, got float64"):
        kernel(a.astype(np.float64), b)
    with pytest.raises(KernelCallError, match="got int32"):
        kernel(a, b.astype(np.int32))
    with pytest.raises(KernelCallError, match="dtype"):
        kernel(a, b.astype(">f4"))  # big-endian float32 is another dtype


def test_lists_and_scalars_are_not_arrays(matmul):
    op, kernel = matmul
    a, b = inputs(op)
    with pytest.raises(KernelCallError, match="'A' must be a numpy.ndarray, got list"):
        kernel(a.tolist(), b)
    with pytest.raises(KernelCallError, match="numpy.ndarray, got float"):
        kernel(a, 1.0)
    with pytest.raises(KernelCallError, match="numpy.ndarray, got NoneType"):
        kernel(None, b)


def test_out_with_wrong_shape_or_dtype(matmul):
    op, kernel = matmul
    a, b = inputs(op)
    with pytest.raises(KernelCallError, match=r"out 'out' must have shape \(31, 43\)"):
        kernel(a, b, out=np.empty((43, 31), np.float32))
    with pytest.raises(KernelCallError, match="out 'out' must have dtype float32, got float64"):
        kernel(a, b, out=np.empty((M, N), np.float64))
    with pytest.raises(KernelCallError, match="numpy.ndarray"):
        kernel(a, b, out=[[0.0] * N] * M)


def test_out_must_be_contiguous_writeable_and_apart_from_the_inputs(matmul, relu):
    op, kernel = matmul
    a, b = inputs(op)
    strided = np.empty((M, 2 * N), np.float32)[:, ::2]
    with pytest.raises(KernelCallError, match="C-contiguous"):
        kernel(a, b, out=strided)
    with pytest.raises(KernelCallError, match="C-contiguous"):
        kernel(a, b, out=np.asfortranarray(np.empty((M, N), np.float32)))
    readonly = np.empty((M, N), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(KernelCallError, match="writeable"):
        kernel(a, b, out=readonly)
    rop, rkernel = relu
    (x,) = inputs(rop)
    with pytest.raises(KernelCallError, match="share memory"):
        rkernel(x, out=x)
    with pytest.raises(KernelCallError, match="share memory"):
        rkernel(x, out=x.reshape(11, 6).reshape(6, 11))  # a view of the same memory
    before = x.copy()
    assert np.array_equal(x, before), "a refused call leaves the input alone"


def test_refused_calls_do_not_break_the_kernel(matmul):
    op, kernel = matmul
    a, b = inputs(op)
    for bad in ((a,), (a, b.T), (a.astype(np.float64), b)):
        with pytest.raises(KernelCallError):
            kernel(*bad)
    assert_close(op, kernel(a, b), op.reference(a, b))


def test_kernel_call_error_is_a_value_error(relu):
    op, kernel = relu
    with pytest.raises(ValueError):
        kernel(np.zeros((1, 1), np.float32))


# -- layouts and out= ----------------------------------------------------------------

def test_non_contiguous_and_fortran_inputs_give_the_right_answer(matmul):
    op, kernel = matmul
    a, b = inputs(op, 1)
    want = op.reference(a, b)
    a_strided = np.zeros((M, 2 * K), np.float32)
    a_strided[:, ::2] = a
    a_view = a_strided[:, ::2]
    b_fortran = np.asfortranarray(b)
    assert not a_view.flags.c_contiguous and not b_fortran.flags.c_contiguous
    assert_close(op, kernel(a_view, b_fortran), want)
    b_reversed = np.ascontiguousarray(b[::-1])[::-1]  # negative strides
    assert_close(op, kernel(a_view, b_reversed), want)
    assert not a_strided[:, 1::2].any(), "inputs are read, never written"


def test_out_is_written_and_returned(matmul):
    op, kernel = matmul
    a, b = inputs(op, 2)
    out = np.full((M, N), np.nan, np.float32)
    got = kernel(a, b, out=out)
    assert got is out
    assert_close(op, out, op.reference(a, b))
    fresh = kernel(a, b)
    assert fresh is not out and np.array_equal(fresh, out)


def test_read_only_and_memory_mapped_inputs(relu, tmp_path):
    """Inputs are found by address whatever owns their memory: a read-only array
    (no writable buffer to export) and a memory-mapped file."""
    op, kernel = relu
    (x,) = inputs(op, 7)
    frozen = x.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(kernel(frozen), np.maximum(x, 0))
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_array_equal(kernel(mapped), np.maximum(x, 0))


def test_repeated_calls_with_new_inputs(relu):
    op, kernel = relu
    for seed in range(5):
        (x,) = inputs(op, seed)
        np.testing.assert_array_equal(kernel(x), np.maximum(x, 0))


def test_calls_on_the_same_arrays_reuse_their_binding_safely(relu):
    """A loop over the same arrays skips reading their addresses: the arrays of the
    last call stay referenced, so their memory can neither be freed nor moved, and
    a new array in any place is bound afresh."""
    op, kernel = relu
    (x,) = inputs(op, 3)
    out = np.empty_like(x)
    for _ in range(3):
        np.testing.assert_array_equal(kernel(x, out=out), np.maximum(x, 0))
    x[:] = -x  # same array, new contents
    np.testing.assert_array_equal(kernel(x, out=out), np.maximum(x, 0))
    with pytest.raises(ValueError, match="resize"):
        x.resize(x.size * 4)  # referenced by the kernel: NumPy refuses to move its data
    other = np.empty_like(x)
    np.testing.assert_array_equal(kernel(x, out=other), np.maximum(x, 0))
    np.testing.assert_array_equal(kernel(x.copy(), out=out), np.maximum(x, 0))


# -- what tune refuses ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["int7", "int32", "float16", "complex64", "bogus", np.int64])
def test_unsupported_dtypes_raise(dtype):
    with pytest.raises(UnsupportedDtypeError, match="dtype"):
        ek.operators.matmul(4, 4, 4, dtype=dtype)


def test_unsupported_dtype_error_is_a_type_error():
    with pytest.raises(TypeError):
        ek.operators.relu((4,), dtype="int32")


@pytest.mark.parametrize("thing", ["matmul", None, 3, np.zeros(3), ek.operators.MatMul])
def test_tune_needs_an_operator(thing):
    with pytest.raises(TypeError, match="operator"):
        ek.tune(thing, budget=2)


# -- what was found: report and plot ------------------------------------------------------

def with_stats(kernel, **changes):
    """The same kernel with other tuning statistics (as an older or unluckier run left them)."""
    import copy
    import dataclasses

    other = copy.copy(kernel)
    other.stats = dataclasses.replace(kernel.stats, **changes)
    return other


def test_report_text_has_times_budget_failures_and_schedule(matmul):
    op, kernel = matmul
    text = kernel.report()
    assert text.splitlines()[0].split() == ["operator", op.key]
    for name in ("target", "budget", "time", "baseline", "throughput", "search", "failures"):
        assert any(line.startswith(name + " ") for line in text.splitlines()), name
    assert "3 evaluations (seed 0)" in text and f"speedup {kernel.speedup:.1f}x" in text
    assert text.endswith("schedule:\n" + kernel.schedule.rstrip())
    unlucky = with_stats(kernel, outcomes={"ok": 1, "wrong_result": 2, "compile_error": 1, "run_crash": 0})
    assert "failures    compile_error 1, wrong_result 2\n" in unlucky.report()
    assert unlucky.stats.failures == {"compile_error": 1, "wrong_result": 2}


def test_report_markdown(matmul):
    op, kernel = matmul
    md = kernel.report(format="markdown")
    assert md.startswith(f"## {op.key} on {kernel.target.string}\n")
    assert f"| operator | {op.key} |" in md and "| failures | none |" in md
    assert md.endswith("```python\n" + kernel.schedule.rstrip() + "\n```")
    with pytest.raises(ek.EvokernelError, match="'text' or 'markdown'"):
        kernel.report("html")


def test_plot_is_a_png_of_the_search(matmul, tmp_path):
    from PIL import Image

    _, kernel = matmul
    assert len(kernel.stats.history_seconds) == len(kernel.stats.history) == 3
    path = kernel.plot(tmp_path / "search.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
        assert image.size[0] > image.size[1] > 100
    old = with_stats(kernel, history_seconds=())  # tuned before wall times were recorded
    assert old.plot(tmp_path / "old.svg").read_text().startswith("<?xml")


def test_old_metadata_loads_without_wall_times(matmul):
    _, kernel = matmul
    data = kernel.stats.to_dict()
    del data["history_seconds"]
    stats = ek.store.TuningStats.from_dict(data)
    assert stats.history_seconds == () and stats.history == kernel.stats.history


def test_plot_without_matplotlib_names_the_extra(matmul, tmp_path, monkeypatch):
    """matplotlib is installed here: a None entry in sys.modules makes its import
    fail exactly as it does where it is missing."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ek.EvokernelError, match=r"pip install 'evokernel\[plot\]'"):
        matmul[1].plot(tmp_path / "x.png")


def test_plot_to_an_unwritable_place_is_an_error(matmul, tmp_path):
    with pytest.raises(ek.EvokernelError, match="cannot write the plot"):
        matmul[1].plot(tmp_path / "no" / "such" / "dir.png")
