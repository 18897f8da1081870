"""Every docstring example runs: the method table's functions (their docstrings come from the specs) and the
library's modules (doctest's own finder)."""

import doctest
import importlib
import pkgutil

import pytest

import jaxsens

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(jaxsens.__path__, "jaxsens.") if not m.name.startswith("jaxsens.examples._")
)


def _run(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out = []
    runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)


@pytest.mark.parametrize("name", list(jaxsens.methods()))
def test_method_docstring_examples_run(name):
    spec = jaxsens.methods()[name]
    globs = dict(vars(jaxsens))  # the examples may use the public names, as `from jaxsens import *` gives them
    test = doctest.DocTestParser().get_doctest(spec.function.__doc__, globs, spec.function_name, None, 0)
    assert test.examples, f"{spec.function_name}'s docstring has no example"
    _run(test)


@pytest.mark.parametrize("module", MODULES)
def test_module_docstring_examples_run(module):
    mod = importlib.import_module(module)
    for test in doctest.DocTestFinder().find(mod, module):
        if test.examples:
            _run(test)
