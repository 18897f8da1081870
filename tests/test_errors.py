"""One error family: every bad model, data source, argument or option raises a JaxsensError subclass.

A table of bad inputs a user can pass to the public API, each with the class it must raise and words the message
must contain (the thing named, or the fix). Anything else escaping is a bug: a raw ``TypeError`` from inside JAX, a
``KeyError`` from a dict, an ``AttributeError`` from a missing check.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

import jaxsens
from jaxsens import errors, examples


@pytest.fixture(scope="module")
def model():
    return jaxsens.load_model(examples.default_model_path())


@pytest.fixture(scope="module")
def X():
    return np.load(examples.default_data_path())[:40]


def _cases(tmp):
    key = jax.random.key(0)
    empty = os.path.join(tmp, "empty.json")
    open(empty, "w").close()
    not_result = os.path.join(tmp, "other.json")
    with open(not_result, "w") as f:
        json.dump({"format": "jaxsens.result", "version": 2, "kind": "JacobianImportance"}, f)  # no fields
    return [
        # (name, call(model, X, y), error class, words in the message)
        ("model is a string", lambda m, X, y: jaxsens.jacobian_importance("m.onnx", X), errors.ArgumentTypeError,
         "needs a jaxsens.Model"),
        ("model is None (weights method)", lambda m, X, y: jaxsens.connection_weights(None),
         errors.ArgumentTypeError, "needs a jaxsens.Model"),
        ("data is a dict", lambda m, X, y: jaxsens.jacobian_importance(m, {"a": 1}), errors.JaxsensError, "data"),
        ("one sample without batch axis", lambda m, X, y: jaxsens.jacobian_importance(m, X[0]), errors.DataError,
         "add a batch axis"),
        ("strings as data", lambda m, X, y: jaxsens.jacobian_importance(m, X.astype(str)), errors.DataError, "str"),
        ("complex data", lambda m, X, y: jaxsens.jacobian_importance(m, X.astype(complex)), errors.DataError,
         "complex"),
        ("beyond float32", lambda m, X, y: m(np.where(np.arange(82) == 3, 1e39, X.astype(np.float64))),
         errors.DataError, "float32 range"),
        ("batch_size 0", lambda m, X, y: jaxsens.jacobian_importance(m, X, batch_size=0), errors.ArgumentError,
         "batch_size"),
        ("unknown output index", lambda m, X, y: jaxsens.jacobian_importance(m, X, outputs=[5]),
         errors.ArgumentError, "out of range"),
        ("unknown output name", lambda m, X, y: jaxsens.jacobian_importance(m, X, outputs=["zz"]),
         errors.ArgumentError, "'zz'"),
        ("NaN rows", lambda m, X, y: jaxsens.jacobian_importance(m, np.full_like(X, np.nan)), errors.DataError,
         "nan_policy"),
        ("scale std on one row", lambda m, X, y: jaxsens.jacobian_importance(m, X[:1], scale="std"),
         errors.JaxsensError, "2 rows"),
        ("no rows", lambda m, X, y: jaxsens.jacobian_importance(m, X[:0]), errors.DataError, "no rows"),
        ("key is a string", lambda m, X, y: jaxsens.perturbation_importance(m, X, key="a"),
         errors.ArgumentTypeError, "PRNG key"),
        ("key is a negative seed", lambda m, X, y: jaxsens.perturbation_importance(m, X, key=-1),
         errors.ArgumentError, "seed"),
        ("negative noise", lambda m, X, y: jaxsens.perturbation_importance(m, X, key=key, noise_scale=-1),
         errors.ArgumentError, "scale"),
        ("targets too short", lambda m, X, y: jaxsens.permutation_importance(m, X, y[:10], key=key),
         errors.DataError, "rows"),
        ("string targets", lambda m, X, y: jaxsens.permutation_importance(m, X, y.astype(str), key=key),
         errors.DataError, "dtype"),
        ("unknown metric", lambda m, X, y: jaxsens.permutation_importance(m, X, y, key=key, metric="zzz"),
         errors.ArgumentError, "metric must be one of"),
        ("metric of the wrong kind", lambda m, X, y: jaxsens.permutation_importance(m, X, y, key=key, metric=3),
         errors.ArgumentTypeError, "metric"),
        ("input perturbation on one row",
         lambda m, X, y: jaxsens.input_perturbation(m, X[:1], y[:1], key=key, metric="accuracy"),
         errors.DataError, "at least 2 rows"),
        ("profile with one step", lambda m, X, y: jaxsens.lek_profile(m, X, steps=1), errors.ArgumentError,
         "steps"),
        ("garson on a plain function",
         lambda m, X, y: jaxsens.garson(jaxsens.Model.from_function(lambda p, x: x * p, 2.0, input_shape=(3,))),
         errors.ArgumentError, "dense_model"),
        ("prediction with the wrong width", lambda m, X, y: m(X[:, :10]), errors.DataError, "expects"),
        ("unknown layer", lambda m, X, y: m.intermediates(X, ["nolayer"]), errors.ArgumentError, "nolayer"),
        ("load_model of an int", lambda m, X, y: jaxsens.load_model(123), errors.ArgumentTypeError, "int"),
        ("missing model file", lambda m, X, y: jaxsens.load_model(os.path.join(tmp, "none.onnx")),
         errors.ModelFileNotFoundError, "does not exist"),
        ("folder as a model", lambda m, X, y: jaxsens.load_model(tmp), errors.ModelFileError, "folder"),
        ("function failing on input_shape",
         lambda m, X, y: jaxsens.Model.from_function(lambda p, x: x @ p, np.ones((2, 2)), input_shape=(3,)),
         errors.ArgumentError, "input_shape=(3,)"),
        ("empty result file", lambda m, X, y: jaxsens.load_result(empty), errors.DataError, "empty.json"),
        ("damaged result file", lambda m, X, y: jaxsens.load_result(not_result), errors.DataError, "damaged"),
        ("missing result file", lambda m, X, y: jaxsens.load_result(os.path.join(tmp, "none.json")),
         errors.DataError, "does not exist"),
    ]


def test_every_bad_input_is_a_jaxsens_error(model, X, tmp_path):
    y = (X[:, 0] > 0).astype(int)
    failures = []
    for name, call, cls, words in _cases(str(tmp_path)):
        try:
            call(model, X, y)
        except errors.JaxsensError as e:
            if not isinstance(e, cls) or words not in str(e):
                failures.append(f"{name}: {type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - the point of the test
            failures.append(f"{name}: raw {type(e).__name__}: {e}")
        else:
            failures.append(f"{name}: no error")
    assert not failures, "\n".join(failures)


def test_the_family_keeps_builtin_bases():
    """``except ValueError`` / ``TypeError`` / ``ImportError`` / ``FileNotFoundError`` code keeps working."""
    assert issubclass(errors.ConversionError, ValueError) and issubclass(errors.DataError, ValueError)
    assert issubclass(errors.ArgumentError, ValueError) and issubclass(errors.ArgumentTypeError, TypeError)
    assert issubclass(errors.MissingExtraError, ImportError)
    assert issubclass(errors.ModelFileNotFoundError, FileNotFoundError)
    assert issubclass(errors.DataFileNotFoundError, FileNotFoundError)
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.JaxsensError), name
        assert getattr(jaxsens, name, cls) is cls  # the top-level re-exports are the same classes
    assert issubclass(jaxsens.NotDenseError, errors.ArgumentError)


def test_no_raw_raise_of_builtin_errors_in_user_facing_code():
    """A raise of a bare built-in error in the library is a message outside the family (internal invariants
    excepted: registering a result kind or an op twice, saving an unknown type)."""
    import pathlib
    import re

    allowed = {("_results.py", "already registered"), ("_results.py", "cannot save"),
               ("_results.py", "is not a registered result class"), ("registry.py", ""),
               ("graph.py", "KeyError(t.data_type)"),
               ("_checkpoint.py", "is not JSON-able")}  # json.dumps' default= protocol: caught and re-raised
    root = pathlib.Path(jaxsens.__file__).parents[1]
    bad = []
    for path in [*root.joinpath("jaxsens").rglob("*.py"), *root.joinpath("converters").rglob("*.py")]:
        text = path.read_text()
        for m in re.finditer(r"raise (ValueError|TypeError|KeyError|IndexError|FileNotFoundError|ImportError)\(.*",
                             text):
            line = m.group(0)
            if not any(path.name == f and (w in line if w else line == "raise ValueError(") for f, w in allowed):
                bad.append(f"{path.relative_to(root)}: {line[:100]}")
    assert not bad, "\n".join(bad)


def test_a_result_file_of_format_1_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": "jaxsens.result", "version": 1, "kind": "jacobian_importance",
                                "fields": {}}))
    with pytest.raises(errors.DataError, match=r"jaxsens 0\.1 \(result format 1.*recompute"):
        jaxsens.load_result(path)
