"""Write certificate and key files atomically, with their final mode from the first byte.

A private key is created 0600 (``os.open`` with that mode, never a ``chmod`` afterwards, so no
other user can open it in between) in a temporary file next to its destination, fsynced, then
moved into place: a crash leaves either no file or the whole file. Without ``force`` an
existing file is never replaced: the move is a hard link, which fails atomically if the name
is taken.
"""

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


@dataclass(frozen=True, slots=True)
class PendingFile:
    """One file to write: destination, bytes, permission bits (before the umask)."""

    path: Path
    content: bytes
    mode: int


def refuse_existing(paths: list[Path], *, force: bool) -> None:
    """Raise ``FileExistsError`` naming the first path that exists, unless ``force``.

    Checking every file before writing any keeps a set (a key and its certificate) whole:
    a refused call writes nothing.
    """
    if force:
        return
    for path in paths:
        if path.exists() or path.is_symlink():
            raise FileExistsError(f"{path} already exists; use --force to overwrite it")


def write_file(pending: PendingFile, *, force: bool) -> None:
    """Write one file atomically with ``pending.mode``; replace an existing one only if ``force``.

    Raises
    ------
    FileExistsError
        If the destination exists and ``force`` is false (the destination is then unchanged).
    """
    path = pending.path
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, pending.mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pending.content)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise FileExistsError(
                    f"{path} already exists; use --force to overwrite it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_files(files: list[PendingFile], *, force: bool) -> None:
    """Write a set of files, refusing before the first write if any exists (unless ``force``)."""
    refuse_existing([pending.path for pending in files], force=force)
    for pending in files:
        write_file(pending, force=force)
