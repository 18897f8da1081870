"""An output folder the user cannot write to, for the CLI's refusals (tests/test_cli.py, test_cli_inside.py).

Tests run as root here, whom permissions do not stop, so :func:`as_nobody` runs a call with the effective uid of
``nobody`` (a real EACCES from the kernel, no mock) and restores it afterwards. :func:`unwritable_folder` makes the
locked folder under /tmp with a 0755 parent, because pytest's ``tmp_path`` is a 0700 folder ``nobody`` cannot enter.
Linux only (``os.seteuid``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

NOBODY = 65534


@contextlib.contextmanager
def unwritable_folder() -> Iterator[str]:
    """A folder of mode 0555 (in a 0755 one under /tmp), removed afterwards."""
    parent = tempfile.mkdtemp(prefix="jaxsens-ro-")
    locked = os.path.join(parent, "ro")
    try:
        os.chmod(parent, 0o755)
        os.mkdir(locked, 0o555)
        yield locked
    finally:
        if os.path.isdir(locked):
            os.chmod(locked, 0o755)
        shutil.rmtree(parent)


def as_nobody(call: Callable[[], Any]) -> Any:
    """``call()`` with the effective uid of ``nobody`` when this process is root (else as it is)."""
    if os.geteuid() != 0:
        return call()
    os.seteuid(NOBODY)
    try:
        return call()
    finally:
        os.seteuid(0)
