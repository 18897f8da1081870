"""Exceptions raised while reading or converting models."""

from __future__ import annotations


class ConversionError(ValueError):
    """A model could not be turned into a JAX function."""


class UnsupportedOpError(ConversionError):
    """An ONNX node uses an op (or an attribute of an op) that the registry does not implement."""


class ModelFileError(ConversionError):
    """A model file is missing, truncated, corrupt or of an unknown format."""


class UnsafeModelError(ConversionError):
    """A model would run arbitrary code (Keras Lambda / custom objects) or read files outside its folder."""


class MissingExtraError(ImportError):
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
