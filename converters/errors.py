"""The jaxsens error family.

Every failure caused by a bad model file, data source, argument or option raises a :class:`JaxsensError`
subclass whose message names the thing and the fix; any other exception escaping jaxsens is a bug. The classes
keep the built-in base they had before the family existed (``ValueError``, ``TypeError``, ``ImportError``,
``FileNotFoundError``), so ``except ValueError`` code written against earlier versions still works.

::

    JaxsensError
    ├── ConversionError (ValueError)            a model could not be turned into a JAX function
    │   ├── UnsupportedOpError                  an op / attribute outside the registry
    │   ├── ModelFileError                      missing, unreadable, truncated, corrupt or unknown file
    │   │   └── ModelFileNotFoundError (FileNotFoundError)
    │   └── UnsafeModelError                    would run code or read outside the model's folder
    ├── DataError (ValueError)                  bad data: names the source, the row / column, the problem
    │   └── DataFileNotFoundError (FileNotFoundError)
    ├── ArgumentError (ValueError)              a bad argument or option value
    │   └── ArgumentTypeError (TypeError)       an argument of the wrong kind
    └── MissingExtraError (ImportError)         an optional dependency is needed: the message names the extra

This module lives in ``converters`` (which jaxsens builds on) so that both packages raise the same classes;
``jaxsens`` re-exports them.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "ConversionError",
    "DataError",
    "DataFileNotFoundError",
    "JaxsensError",
    "MissingExtraError",
    "ModelFileError",
    "ModelFileNotFoundError",
    "UnsafeModelError",
    "UnsupportedOpError",
    "require",
]


class JaxsensError(Exception):
    """Base of every error jaxsens raises on purpose (bad model, data, argument or option)."""


class ConversionError(JaxsensError, ValueError):
    """A model could not be turned into a JAX function."""


class UnsupportedOpError(ConversionError):
    """An ONNX node uses an op (or an attribute of an op) that the registry does not implement."""


class ModelFileError(ConversionError):
    """A model file is missing, unreadable, truncated, corrupt or of an unknown format."""


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """A model path that does not exist."""


class UnsafeModelError(ConversionError):
    """A model would run arbitrary code (Keras Lambda / custom objects) or read files outside its folder."""


class DataError(JaxsensError, ValueError):
    """Bad data: the message names the source, the row / column and the problem."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data path that does not exist."""


class ArgumentError(JaxsensError, ValueError):
    """A bad argument or option value (the message names the argument, the value and what is accepted)."""


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of the wrong kind (e.g. a dict where a path or an array is expected)."""


class MissingExtraError(JaxsensError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""


def require(module: str, extra: str, what: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError(
            f"{what} needs the optional dependency {module!r}: pip install 'jaxsens[{extra}]'"
        ) from e
