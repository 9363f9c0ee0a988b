"""The ``evokernel`` command, driven in a subprocess as a user would."""

import subprocess
import sys


def run(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "evokernel", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_tune_prints_report_check_and_schedule():
    done = run("tune", "relu", "shape=4,100", "--budget", "4 evals", "--seed", "0")
    assert done.returncode == 0, done.stderr
    assert "relu(shape=4x100" in done.stdout
    assert "matches the NumPy reference" in done.stdout
    assert "out." in done.stdout  # schedule code


def test_unknown_operator_is_one_clear_line_and_exit_2():
    done = run("tune", "convolution3d", "n=1")
    assert done.returncode == 2
    assert "unknown operator 'convolution3d'" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_operator_argument_and_bad_budget_and_target():
    bad_size = run("tune", "matmul", "m=0", "n=4", "k=4")
    assert bad_size.returncode == 2 and "m must be a positive integer" in bad_size.stderr
    bad_budget = run("tune", "relu", "shape=8", "--budget", "soon")
    assert bad_budget.returncode == 2 and "budget" in bad_budget.stderr
    bad_target = run("tune", "relu", "shape=8", "--target", "bogus")
    assert bad_target.returncode == 2 and "target" in bad_target.stderr
    assert all("Traceback" not in d.stderr for d in (bad_size, bad_budget, bad_target))
