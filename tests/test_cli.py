"""The ``evokernel`` command, driven in a subprocess as a user would, on a private
cache directory: tune, list, show, export, demo and bench, good and bad arguments."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import evokernel as ek

TINY = ["--budget", "3", "--evaluator", "local", "--seed", "0"]


def run(cache, *args, timeout=300):
    env = {**os.environ, "EVOKERNEL_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "evokernel", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_clear_line(done, code=2):
    """A refused command: the given exit status, one line on stderr, no traceback."""
    assert done.returncode == code, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def tuned_cli(make_cache):
    """A cache holding two kernels tuned through the command line, and what each
    ``tune`` printed (the tests of this module that take it run in file order)."""
    cache = make_cache("cli")
    relu = run(cache, "tune", "relu", "shape=4,100", *TINY)
    matmul = run(cache, "tune", "matmul", "m=24", "n=16", "k=8", *TINY)
    return cache, (relu, matmul)


def test_tune_prints_report_check_and_schedule(tuned_cli):
    _, (relu, matmul) = tuned_cli
    for done in (relu, matmul):
        assert done.returncode == 0, done.stderr
        assert "matches the NumPy reference" in done.stdout
        assert "failures" in done.stdout and "speedup" in done.stdout
    assert "relu(shape=4x100" in relu.stdout
    assert "matmul(m=24,n=16,k=8" in matmul.stdout
    assert "schedule:\n" in matmul.stdout and "out." in matmul.stdout.split("schedule:")[1]


def test_list_shows_each_cached_kernel(tuned_cli):
    cache, _ = tuned_cli
    done = run(cache, "list")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.strip().splitlines()
    assert header.split() == ["id", "operator", "target", "time", "speedup", "tuned"]
    assert len(rows) == 2
    assert {row.split()[1] for row in rows} == {k.operator for k in ek.cached_kernels(cache_dir=cache)}
    assert all(row.split()[2] == "host" and re.search(r" \d+(\.\d+)? (us|ms|s) +\d+\.\dx +20\d\d-\d\d-\d\d ", row)
               for row in rows), rows
    only = run(cache, "list", "matmul").stdout.strip().splitlines()
    assert len(only) == 2 and "matmul(m=24" in only[1]


def test_show_by_name_id_and_arguments(tuned_cli):
    cache, _ = tuned_cli
    by_name = run(cache, "show", "matmul")
    assert by_name.returncode == 0, by_name.stderr
    assert "matmul(m=24,n=16,k=8" in by_name.stdout and "history: 1: " in by_name.stdout
    assert "schedule:" in by_name.stdout
    kernel_id = next(k.id for k in ek.cached_kernels("matmul", cache_dir=cache))
    by_id = run(cache, "show", kernel_id)
    by_args = run(cache, "show", "relu", "shape=4,100", "--markdown")
    assert by_id.stdout == by_name.stdout
    assert by_args.returncode == 0 and by_args.stdout.startswith("## relu(shape=4x100")
    assert "| failures |" in by_args.stdout and "```python" in by_args.stdout


def test_show_plots_a_png(tuned_cli, tmp_path):
    cache, _ = tuned_cli
    path = tmp_path / "search.png"
    done = run(cache, "show", "relu", "--plot", str(path))
    assert done.returncode == 0, done.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_refuses_unknown_and_ambiguous_kernels(tuned_cli):
    cache, _ = tuned_cli
    assert "no cached kernel matches 'conv2d'" in one_clear_line(run(cache, "show", "conv2d"))
    run(cache, "tune", "relu", "shape=7", *TINY)
    ambiguous = one_clear_line(run(cache, "show", "relu"))
    assert "matches 2 cached kernels" in ambiguous and "name one by id" in ambiguous


def test_tune_a_second_time_is_the_cached_kernel(tuned_cli):
    cache, runs = tuned_cli
    again = run(cache, "tune", "relu", "shape=4,100", *TINY)
    assert again.returncode == 0
    first_time = next(line for line in runs[0].stdout.splitlines() if line.startswith("time"))
    assert first_time in again.stdout


def test_export_c_writes_a_library(tuned_cli, tmp_path):
    cache, _ = tuned_cli
    done = run(cache, "export", "c", str(tmp_path / "lib"), "--operator", "matmul", "--name", "mylib")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("exported 1 kernels:")
    assert {p.name for p in (tmp_path / "lib").iterdir()} >= {"mylib.h", "libmylib.so", "libmylib.a"}
    assert "mylib_matmul" in (tmp_path / "lib" / "mylib.h").read_text()


def test_export_tengine_writes_a_plugin_or_names_what_it_cannot_express(tuned_cli, tmp_path):
    cache, _ = tuned_cli
    plugin = tmp_path / "libek_tengine.so"
    done = run(cache, "export", "tengine", str(plugin), "--operator", "relu", "shape=4,100")
    assert done.returncode == 0, done.stderr
    assert plugin.read_bytes()[:4] == b"\x7fELF"
    assert "matmul" in one_clear_line(run(cache, "export", "tengine", str(tmp_path / "x.so"), "--operator", "matmul"))


def test_export_refuses_what_is_not_cached(tuned_cli, tmp_path):
    cache, _ = tuned_cli
    assert "no cached kernel matches 'softmax'" in one_clear_line(
        run(cache, "export", "c", str(tmp_path / "x"), "--operator", "softmax"))
    assert "invalid choice: 'onnx'" in one_clear_line(run(cache, "export", "onnx", str(tmp_path / "x")))


def test_list_on_an_empty_cache(cache):
    done = run(cache, "list")
    assert done.returncode == 0 and "no cached kernels yet" in done.stdout


def test_demo_with_a_tiny_budget(cache):
    done = run(cache, "demo", "--budget", "2", "--evaluator", "local")
    assert done.returncode == 0, done.stderr
    assert "matmul(m=512,n=512,k=512" in done.stdout and "matches the NumPy reference" in done.stdout


def test_unknown_operator_is_one_clear_line_and_exit_2(cache):
    assert "unknown operator 'convolution3d'" in one_clear_line(run(cache, "tune", "convolution3d", "n=1"))


@pytest.mark.parametrize("args, message", [
    (["tune", "matmul", "m=0", "n=4", "k=4"], "m must be a positive integer"),
    (["tune", "relu", "shape=8", "--budget", "soon"], "budget"),
    (["tune", "relu", "shape=8", "--target", "bogus"], "target"),
    (["tune", "relu", "8"], "key=value"),
    (["tune", "relu", "shape=8", "color=red"], "unexpected keyword argument 'color'"),
    (["tune", "relu", "shape=8", "--seed", "x"], "invalid int value"),
    (["tune", "relu", "shape=8", "--evaluator", "gpu"], "invalid choice"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["list", "--colour"], "unrecognized arguments: --colour"),
    ([], "required: COMMAND"),
])
def test_bad_arguments_are_one_clear_line_and_exit_2(cache, args, message):
    assert message in one_clear_line(run(cache, *args))


@pytest.mark.ray
def test_tune_on_a_ray_cluster(cache):
    """A real one-node Ray cluster on loopback that offers the host's runner resource;
    the command joins it by address."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "resources": ek.evaluators.runner_resources("host")})
    try:
        done = run(cache, "tune", "relu", "shape=9,9", "--budget", "3", "--seed", "0", "--cluster", cluster.address)
    finally:
        cluster.shutdown()
    assert done.returncode == 0, done.stderr
    assert "relu(shape=9x9" in done.stdout and "matches the NumPy reference" in done.stdout


def test_unreachable_cluster_is_one_clear_line(cache):
    assert "HOST:PORT" in one_clear_line(run(cache, "tune", "relu", "shape=8", "--cluster", "head"))
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in one_clear_line(
        run(cache, "tune", "relu", "shape=8", "--cluster", "127.0.0.1:9", timeout=60))


def test_debug_shows_the_traceback(cache):
    done = run(cache, "--debug", "tune", "matmul", "m=0", "n=4", "k=4")
    assert done.returncode != 0 and "Traceback" in done.stderr and "OperatorArgumentError" in done.stderr


def test_help_lists_every_command(cache):
    done = run(cache, "--help")
    assert done.returncode == 0
    for command in ("tune", "list", "show", "export", "bench", "demo"):
        assert command in done.stdout


def test_bench_help_passes_through(cache):
    done = run(cache, "bench", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def _relu_model(path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu_net", [x], [y])
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def test_tune_model_reports_the_network_and_saves_it(cache, tmp_path):
    model, saved = _relu_model(tmp_path / "relu.onnx"), tmp_path / "relu.evokernel-model"
    done = run(cache, "tune-model", str(model), "--input", "x=4x16", "--budget", "3", "--evaluator", "local",
               "--quiet", "--out", str(saved))
    assert done.returncode == 0, done.stderr
    assert "1 of 1 nodes on tuned kernels" in done.stdout and saved.is_file()


@pytest.mark.parametrize("extra, message", [
    (["--input", "x=4xbig"], "--input takes NAME=DIMS"),
    ([], "dynamic dimension 'n'"),
    (["--input", "images=4x16"], "'images', which the model has not"),
])
def test_tune_model_refuses_bad_inputs_in_one_line(cache, tmp_path, extra, message):
    model = _relu_model(tmp_path / "relu.onnx")
    assert message in one_clear_line(run(cache, "tune-model", str(model), "--evaluator", "local", *extra))
