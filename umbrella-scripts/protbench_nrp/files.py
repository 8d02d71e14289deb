"""Writing files so that a reader, a restart or an upload never meets half of one.

Every output that a kill could tear is written through here: the new content
goes to a temporary file beside the target, which then replaces the target
(:func:`atomic_write`) or, for provenance that must never be replaced, is
linked to a new name (:func:`write_new_file`), in one step.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Suffix of the temporary files; a kill can leave one behind (see engine.remove_stale_temporaries).
TEMP_SUFFIX = ".tmp"


def _temporary_beside(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    # mkstemp makes owner-only files; outputs are shared (by group, in a pod) like any other file
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    return fd, tmp


def atomic_write(path: Path | str, data: bytes | str, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers (and a restart) see old or new, never a mix.

    With ``durable``, the data reaches the disk before the rename, so the new
    name never points at a file the OS has not yet written.
    """
    path = Path(path)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_new_file(path: Path | str, text: str) -> None:
    """Create ``path`` holding ``text``, complete or not at all, never replacing a file.

    The text goes to a temporary file beside ``path`` first, which is then
    hard-linked into place: the link either appears whole or fails because
    the name exists, so a reader (or a crash) never meets half a manifest and
    an existing provenance file is never overwritten.

    Raises
    ------
    FileExistsError
        When ``path`` already exists.
    """
    path = Path(path)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # file systems without hard links: look, then move atomically
            if path.exists():
                raise FileExistsError(f"{path} already exists") from None
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
