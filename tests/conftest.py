"""Shared pytest fixtures.

`isa`: runs a test once per kernel path this build has and this CPU can run
(`qwen_cpu._kernels.available_isas()`, e.g. "scalar", "avx2"). The path is selected with
`_kernels.set_isa` before the test and the previously selected one is restored afterwards, so
kernel tests exercise every ISA without leaking the choice into other tests. Use it in any test
of a C++ kernel::

    def test_something(isa):
        ...  # every _kernels call here runs on the path named `isa`

The test id carries the path name (test_something[avx2]). To compare a path against the scalar
reference inside such a test, take the `use_isa` fixture too: `with use_isa("scalar"): ...` selects
a path for the body of the `with` only.
"""

import contextlib

import pytest

from qwen_cpu import _kernels


@contextlib.contextmanager
def on_isa(name):
    """Run the body with kernel path `name` selected, then restore the path in use before."""
    previous = _kernels.get_isa()
    _kernels.set_isa(name)
    try:
        yield name
    finally:
        _kernels.set_isa(previous)


@pytest.fixture(params=_kernels.available_isas())
def isa(request):
    """The name of the kernel path selected for this test (parametrized over all available ones)."""
    with on_isa(request.param) as name:
        yield name


@pytest.fixture
def use_isa():
    """The `on_isa(name)` context manager: select a kernel path for the body of a `with` only."""
    return on_isa
