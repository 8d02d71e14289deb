"""Small machine-readable records a window leaves beside its outputs.

:class:`UmbrellaParameters` is written once when a window starts and read by
analysis, so the PMF uses the centre, force constant and temperature the
window really ran with instead of constants re-typed elsewhere.
:class:`Progress` is rewritten every frame and read by status tools.

Both are JSON, written atomically (temporary file + ``os.replace``) so a
reader never sees half a record.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

from . import science
from .files import atomic_write


def write_json_atomic(path: Path | str, payload: dict) -> None:
    """Write ``payload`` to ``path`` so that readers see the old or the new record, never a mix."""
    # Not fsynced: a record lost to a power cut is rewritten at the next frame.
    atomic_write(path, json.dumps(payload, indent=1, sort_keys=True) + "\n", durable=False)


def record_from_dict(cls, payload: dict):
    """Build record class ``cls`` from a parsed JSON object; extra keys (``kind``) are ignored.

    Raises
    ------
    ValueError
        Naming the fields the object lacks.
    """
    names = {f.name for f in fields(cls)}
    missing = names - set(payload) - set(getattr(cls, "MAY_LACK", ()))
    if missing:
        raise ValueError(f"{cls.__name__} record lacks {', '.join(sorted(missing))}")
    return cls(**{k: v for k, v in payload.items() if k in names})


@dataclass(frozen=True)
class UmbrellaParameters:
    """What analysis needs to know about one window, in explicit units."""

    target: str
    ff: str
    replica: int
    window: int
    n_windows: int
    cv_name: str
    centre: float
    k_kcal_per_mol: float
    temperature_kelvin: float
    pressure_atm: float
    timestep_fs: float
    frame_ps: float
    production_length_ns: float
    equil_length_ns: float
    #: Defaults only so that callers written before these fields still build a record;
    #: a file lacking them does not read (:func:`record_from_dict`).
    checkpoint_ps: float = science.CHECKPOINT_PS
    friction_per_ps: float = science.FRICTION_PER_PS

    @property
    def k_kj_per_mol(self) -> float:
        return self.k_kcal_per_mol * science.KJ_PER_KCAL

    def write(self, path: Path | str) -> None:
        write_json_atomic(path, {"kind": "umbrella-parameters", **asdict(self)})

    @classmethod
    def read(cls, path: Path | str) -> "UmbrellaParameters":
        return record_from_dict(cls, json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class Progress:
    """Where a window's production stands.

    ``updated_unix`` is seconds since the epoch; a status tool compares it
    with the present to spot a stalled window. ``timestep_fs`` and
    ``frame_ps`` are those the phase really runs with, and
    ``steps_after_phase`` the steps of the phases still to come (a window's
    production, while it equilibrates), so status tools need not re-derive
    them from a Job's environment. A record written before them lacks them
    (``None``).
    """

    phase: str  # "equilibration", "production", "pulling", "finished" or "blew-up"
    step: int
    total_steps: int
    ns_per_day: float
    updated_unix: float
    #: Blow-ups the stage recovered from (see engine.ResumableStage).
    recoveries: int = 0
    timestep_fs: float | None = None
    frame_ps: float | None = None
    steps_after_phase: int | None = None

    #: Fields a record written by an earlier version lacks; they read as their defaults.
    MAY_LACK: ClassVar[tuple[str, ...]] = ("recoveries", "timestep_fs", "frame_ps", "steps_after_phase")

    @property
    def fraction_done(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    def write(self, path: Path | str) -> None:
        write_json_atomic(path, {"kind": "progress", **asdict(self)})

    @classmethod
    def read(cls, path: Path | str) -> "Progress":
        """The record in the file ``path``; raises ``ValueError`` naming it when it does not read."""
        return cls.parse(Path(path).read_text(), str(path))

    @classmethod
    def parse(cls, text: str, where: str) -> "Progress":
        """The record in ``text``, the contents of ``where`` (a path or a bucket key, for messages).

        The one reader of progress records: the stage table, ``--status`` and
        ``--local`` all read them here.

        Raises
        ------
        ValueError
            Naming ``where`` and what is wrong: not JSON, not an object, or lacking fields.
        """
        try:
            payload = json.loads(text)
        except ValueError as error:
            raise ValueError(f"{where}: not JSON ({error})") from None
        if not isinstance(payload, dict):
            raise ValueError(f"{where}: not a JSON object")
        try:
            return cls.from_dict(payload)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: {error}") from None

    @classmethod
    def from_dict(cls, payload: dict) -> "Progress":
        """Build from a parsed record; one written by an earlier version lacks the later fields."""
        return record_from_dict(cls, payload)

    @classmethod
    def now(cls, phase: str, step: int, total_steps: int, ns_per_day: float, recoveries: int = 0,
            **ran_with) -> "Progress":
        """A record stamped now; ``ran_with``: ``timestep_fs``, ``frame_ps``, ``steps_after_phase``."""
        return cls(phase, int(step), int(total_steps), float(ns_per_day), time.time(), int(recoveries),
                   **ran_with)
