"""Target strings: 'host', Halide target strings, and clear errors for the rest."""

import pytest

import evokernel as ek
from evokernel.errors import TargetError


def test_host_is_this_machine_and_runs_here():
    host = ek.Target.parse("host")
    assert host.arch == "x86" and host.runs_here()
    assert ek.Target.parse(host) is host


def test_halide_string_is_normalised_and_subset_of_host_runs_here():
    t = ek.Target.parse(" x86-64-linux-avx2 ")
    assert t.string == "x86-64-linux-avx2"
    assert t.runs_here()


@pytest.mark.parametrize("text", ["arm-64-linux", "x86-64-linux-cuda", "x86-64-osx"])
def test_foreign_targets_parse_but_do_not_run_here(text):
    assert not ek.Target.parse(text).runs_here()


@pytest.mark.parametrize("bad", ["", "   ", "bogus", "x86-64-linux-avx9000", None, 3])
def test_bad_targets_raise_target_error_naming_them(bad):
    with pytest.raises(TargetError, match="target"):
        ek.Target.parse(bad)


def test_natural_vector_size_follows_dtype():
    host = ek.Target.parse("host")
    assert host.natural_vector_size("float32") == 2 * host.natural_vector_size("float64")
