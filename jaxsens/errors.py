"""The jaxsens error family (see :mod:`converters.errors` for the tree).

Catch :class:`JaxsensError` to handle every failure caused by a bad model, data source, argument or option;
anything else escaping jaxsens is a bug worth reporting.
"""

from converters import errors as _family
from converters.errors import (
    ArgumentError,
    ArgumentTypeError,
    ConversionError,
    DataError,
    DataFileNotFoundError,
    JaxsensError,
    MissingExtraError,
    ModelFileError,
    ModelFileNotFoundError,
    UnsafeModelError,
    UnsupportedOpError,
)

__all__ = [name for name in _family.__all__ if name != "require"]  # the classes, one list
