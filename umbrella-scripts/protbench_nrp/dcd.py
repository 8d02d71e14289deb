"""Inspecting, repairing and reading the DCD files OpenMM writes.

OpenMM's :class:`openmm.app.DCDFile` writes the CHARMM flavour of DCD,
little-endian: a header whose ``NSET`` field (offset 8) counts the frames and
whose ``NSTEP`` field (offset 20) holds the step of the last frame, then one
fixed-size record per frame. When it appends, it trusts ``NSET`` and writes at
the end of the file, so a file cut short by a kill (a torn last frame, or a
header updated before the frame it counts) must be repaired *before* appending:
:func:`truncate_dcd` cuts it to whole frames and rewrites both fields.

Frame counts here come from the file size, never from the header, because the
header is exactly what a kill leaves inconsistent.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ProtbenchError

_MAGIC = b"CORD"
_FIRST_RECORD = 84
_NSET_OFFSET = 8
_ISTART_OFFSET = 12
_NSAVC_OFFSET = 16
_NSTEP_OFFSET = 20
_BOX_FLAG_OFFSET = 48
_TITLE_LENGTH_OFFSET = 92
_BOX_RECORD_BYTES = 4 + 6 * 8 + 4


class DCDFormatError(ProtbenchError, ValueError):
    """A file is not a DCD that this module (and OpenMM) can append to."""


@dataclass(frozen=True)
class DCDInfo:
    """What the header and the size of a DCD file say about it.

    Attributes
    ----------
    n_atoms : int
    has_box : bool
        Whether every frame carries a unit-cell record.
    first_step : int
        Step of the first frame (``ISTART``).
    interval : int
        Steps between frames (``NSAVC``).
    header_frames : int
        Frames the header claims (``NSET``); may disagree with ``n_frames``.
    n_frames : int
        Whole frames actually present.
    header_bytes, frame_bytes, file_bytes : int
    """

    n_atoms: int
    has_box: bool
    first_step: int
    interval: int
    header_frames: int
    n_frames: int
    header_bytes: int
    frame_bytes: int
    file_bytes: int

    @property
    def torn(self) -> bool:
        """True when the file holds a partial frame or a header that disagrees with its size."""
        return (self.file_bytes != self.header_bytes + self.n_frames * self.frame_bytes
                or self.header_frames != self.n_frames)

    def step_of(self, frame: int) -> int:
        """Step of the ``frame``-th frame of this file (0-based)."""
        return self.first_step + frame * self.interval


def inspect_dcd(path: Path | str) -> DCDInfo:
    """Read the header of a DCD file and count its whole frames.

    Raises
    ------
    DCDFormatError
        When the header is missing, cut short or not a DCD header.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(_TITLE_LENGTH_OFFSET + 4)
        if len(head) < _TITLE_LENGTH_OFFSET + 4:
            raise DCDFormatError(f"{path} is too short ({len(head)} bytes) to hold a DCD header")
        record, magic = struct.unpack("<i4s", head[:8])
        if record != _FIRST_RECORD or magic != _MAGIC:
            raise DCDFormatError(f"{path} does not start with a little-endian CHARMM DCD header")
        nset, istart, nsavc, _nstep = struct.unpack("<4i", head[8:24])
        (box_flag,) = struct.unpack("<i", head[_BOX_FLAG_OFFSET:_BOX_FLAG_OFFSET + 4])
        (title_bytes,) = struct.unpack("<i", head[_TITLE_LENGTH_OFFSET:_TITLE_LENGTH_OFFSET + 4])
        atoms_offset = _TITLE_LENGTH_OFFSET + 4 + title_bytes + 4 + 4
        handle.seek(atoms_offset)
        atoms = handle.read(8)
        if len(atoms) < 8 or title_bytes < 0:
            raise DCDFormatError(f"{path}: the DCD header is cut short")
        n_atoms, closing = struct.unpack("<2i", atoms)
        if closing != 4 or n_atoms <= 0:
            raise DCDFormatError(f"{path}: the DCD header's atom-count record is damaged")
        file_bytes = handle.seek(0, os.SEEK_END)
    header_bytes = atoms_offset + 8
    frame_bytes = (_BOX_RECORD_BYTES if box_flag else 0) + 3 * (8 + 4 * n_atoms)
    n_frames = max(file_bytes - header_bytes, 0) // frame_bytes
    return DCDInfo(n_atoms, bool(box_flag), istart, nsavc, nset, n_frames,
                   header_bytes, frame_bytes, file_bytes)


def truncate_dcd(path: Path | str, n_frames: int) -> DCDInfo:
    """Cut a DCD file to its first ``n_frames`` whole frames and make the header agree.

    A torn last frame is dropped even when ``n_frames`` is larger than what
    the file holds; the result then keeps every whole frame. Returns the
    repaired file's :class:`DCDInfo`.
    """
    path = Path(path)
    info = inspect_dcd(path)
    keep = min(max(int(n_frames), 0), info.n_frames)
    if keep == info.n_frames and not info.torn:
        return info
    with open(path, "r+b") as handle:
        handle.truncate(info.header_bytes + keep * info.frame_bytes)
        handle.seek(_NSET_OFFSET)
        handle.write(struct.pack("<i", keep))
        handle.seek(_NSTEP_OFFSET)
        # OpenMM keeps the step of the newest frame here and overwrites it on append.
        handle.write(struct.pack("<i", info.step_of(keep - 1) if keep else info.first_step))
        handle.flush()
        os.fsync(handle.fileno())
    return inspect_dcd(path)


@dataclass(frozen=True)
class DCDFrames:
    """Frames of one or more DCD files.

    Attributes
    ----------
    steps : numpy.ndarray of int, shape (n_frames,)
    positions_nm : numpy.ndarray of float32, shape (n_frames, n_atoms, 3)
    box_lengths_nm : numpy.ndarray, shape (n_frames, 3), or None for non-periodic files
    """

    steps: np.ndarray
    positions_nm: np.ndarray
    box_lengths_nm: np.ndarray | None

    def __len__(self) -> int:
        return len(self.steps)


def read_dcd(path: Path | str) -> DCDFrames:
    """Read every whole frame of a DCD file (a torn last frame is ignored)."""
    info = inspect_dcd(path)
    raw = np.fromfile(path, dtype=np.uint8, offset=info.header_bytes,
                      count=info.n_frames * info.frame_bytes)
    raw = raw.reshape(info.n_frames, info.frame_bytes)
    box = None
    start = 0
    if info.has_box:
        # lengths (A) sit at doubles 0, 2 and 5 of the record, after its 4-byte marker
        cell = raw[:, 4:4 + 48].copy().view("<f8").reshape(info.n_frames, 6)
        box = cell[:, [0, 2, 5]] / 10.0
        start = _BOX_RECORD_BYTES
    coords = np.empty((info.n_frames, info.n_atoms, 3), dtype=np.float32)
    block = 8 + 4 * info.n_atoms
    for axis in range(3):
        begin = start + axis * block + 4
        data = raw[:, begin:begin + 4 * info.n_atoms].copy().view("<f4")
        coords[:, :, axis] = data / 10.0
    steps = info.first_step + info.interval * np.arange(info.n_frames, dtype=np.int64)
    return DCDFrames(steps, coords, box)
