"""Writing output files: atomically, with the user's umask, and one run per output folder at a time.

Every file jaxsens writes (result JSON, CSV tables, plots, converted ``.onnx`` models) goes through
:func:`atomic_write`: the bytes go to a temporary file in the destination's folder, are flushed to disk, and the
temporary file is renamed over the destination with ``os.replace``. A reader therefore sees the old file or the new
one, never half of one, and an interrupted run leaves no partial output. The temporary file is created with mode
``0o666`` filtered by the process umask, like any file opened with ``open(path, "w")``: ``0644`` under the usual
umask ``022`` (``tempfile.mkstemp`` would give ``0600``).

:func:`output_folder` is how the command line claims an ``--out`` folder before it computes anything: it checks
the path, creates the folder and takes an exclusive, non-blocking ``flock`` on ``FOLDER/.jaxsens.lock``, so a
second run on the same folder fails at once with a message naming the folder and the holder's process id.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from converters.errors import ArgumentError

__all__ = ["LOCK_NAME", "atomic_write", "check_output_file", "output_folder"]

LOCK_NAME = ".jaxsens.lock"


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (``str`` is encoded as UTF-8, newlines kept as given) to ``path`` atomically.

    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the umask).

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "a.txt"); atomic_write(p, "hello\\n")
        >>> open(p).read()
        'hello\\n'
    """
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_output_file(path: str, *, option: str) -> None:
    """Refuse an output file path that cannot be written, before any work is done.

    ``option`` names the command-line option (e.g. ``"-o/--out"``) for the message.
    """
    if os.path.isdir(path):
        raise ArgumentError(f"{option} {path!r} is a folder; pass a file path such as {os.path.join(path, 'model.onnx')!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ArgumentError(f"{option} {path!r}: the folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ArgumentError(f"{option} {path!r}: the folder {folder!r} is not writable; choose another path")


@contextlib.contextmanager
def output_folder(folder: str, *, option: str = "--out", files: tuple[str, ...] = ()) -> Iterator[str]:
    """Check, create and lock an output folder for the duration of the ``with`` block.

    Raises :class:`~converters.errors.ArgumentError` when ``folder`` is a file, cannot be created or written, one
    of ``files`` inside it is a folder, or another process holds its lock. The lock is released (and the lock file
    removed) on exit; a folder created here and left empty (the run failed) is removed again.
    """
    path = os.path.abspath(folder)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ArgumentError(f"{option} {folder!r} is a file, not a folder; pass a folder (it is created if missing)")
    created = not os.path.exists(path)
    if created:
        try:
            os.makedirs(path)
        except FileExistsError:  # created meanwhile by someone else, or a file in the way
            created = False
            if not os.path.isdir(path):
                raise ArgumentError(f"{option} {folder!r} is a file, not a folder") from None
        except OSError as e:
            raise ArgumentError(f"{option} {folder!r} cannot be created: {e.strerror}; choose another folder") from None
    try:
        for name in files:
            if os.path.isdir(os.path.join(path, name)):
                raise ArgumentError(f"{option} {folder!r} holds a folder named {name!r} where the output file "
                                    f"goes; remove it or choose another folder")
        with _lock(path, folder, option):
            yield path
    finally:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(path)  # only succeeds when nothing was written


@contextlib.contextmanager
def _lock(path: str, folder: str, option: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not serialised
        yield
        return
    lock_path = os.path.join(path, LOCK_NAME)
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise ArgumentError(f"{option} {folder!r} is not writable ({e.strerror}); choose another folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise ArgumentError(
                f"{option} {folder!r} is in use by another jaxsens run ({who}); wait for it to finish or choose "
                f"another folder"
            ) from None
        # the previous holder may have removed the file between our open and our flock: retry on the new file
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)  # while still holding the lock, so no one can lock this inode afterwards
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
