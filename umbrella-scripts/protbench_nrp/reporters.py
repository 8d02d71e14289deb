"""Per-frame reporters that survive being killed at any instant.

Each reporter here owns one kind of output of a stage (trajectory, state
data, CV time series) and knows three things OpenMM's own reporters do not:

* how many *whole* frames it holds on disk (:meth:`frames_on_disk`), ignoring
  a torn last DCD frame or a partial last text line;
* how to cut itself back to a given number of frames (:meth:`truncate`), so
  that it agrees with the checkpoint a run resumes from;
* how to make its frames durable (:meth:`flush` with ``durable=True``) before
  a checkpoint claims them.

Frame ``i`` (0-based) of a stage is taken at step ``(i + 1) * frame_steps``;
the step counter of every stage starts at 0.

:class:`~protbench_nrp.engine.ResumableStage` drives them; anyone may add a
reporter of their own by implementing the same methods (see
:class:`FrameReporter`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .dcd import DCDFormatError, inspect_dcd, truncate_dcd
from .errors import ProtbenchError
from .imaging import FrameImager
from .records import Progress
from .science import MOLAR_GAS_CONSTANT_KJ_PER_MOL_K


@dataclass
class Frame:
    """What a reporter gets at a frame boundary.

    Attributes
    ----------
    index : int
        0-based frame index within the stage.
    step : int
        Step count of the stage (``(index + 1) * frame_steps``).
    state : openmm.State
        Holds at least what the reporters asked for through ``needs``.
    context : openmm.Context
    ns_per_day : float
        Throughput since the stage (re)started, 0 before the first frame.
    """

    index: int
    step: int
    state: object
    context: object
    ns_per_day: float


class FrameReporter:
    """Interface of a resumable per-frame reporter.

    Attributes
    ----------
    needs : frozenset of str
        Parts of the State it reads: any of ``"positions"``, ``"velocities"``,
        ``"energy"``.
    name : str
        Shown in resume messages.
    """

    needs: frozenset = frozenset()
    name: str = "reporter"

    def frames_on_disk(self) -> int:
        """Whole frames present on disk now; reading only, nothing is changed."""
        raise NotImplementedError

    def truncate(self, n_frames: int) -> None:
        """Keep the first ``n_frames`` frames and repair what a kill left torn."""
        raise NotImplementedError

    def open(self, n_frames: int) -> None:
        """Prepare to append frame ``n_frames`` (the file holds exactly that many)."""
        raise NotImplementedError

    def report(self, frame: Frame) -> None:
        raise NotImplementedError

    def flush(self, durable: bool = False) -> None:
        """Hand buffered frames to the OS; with ``durable``, also ``fsync`` them."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _fsync(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


class SegmentedDCDReporter(FrameReporter):
    """Positions of every frame, as DCD files of ``frames_per_segment`` frames each.

    Segment ``k`` holds frames ``[k*F, (k+1)*F)``. With the segment length equal
    to the checkpoint interval, a segment is finished exactly when a checkpoint
    is written and never changes again, so a periodic upload sends it once.
    With ``frames_per_segment=None`` there is one file, ``segment_path(0)``.

    Parameters
    ----------
    segment_path : callable
        ``segment_path(k) -> Path`` of segment ``k``.
    topology : openmm.app.Topology or None
        Atoms of the system; its periodic box (or its absence) decides whether
        frames carry a unit cell. Periodic frames are written with the protein
        whole at the box centre and every other molecule in the box
        (:class:`~protbench_nrp.imaging.FrameImager`). ``None`` makes a
        reporter that can only inspect files (:meth:`frames_on_disk`), e.g.
        to see if a run is done.
    frame_steps : int
        Steps between frames.
    timestep_ps : float
        Integration step, recorded in the DCD header.
    frames_per_segment : int or None
    stray_glob : str, optional
        Glob (in the segments' directory) matching every segment file, so
        truncation also removes segments beyond a gap.
    """

    needs = frozenset({"positions"})
    name = "trajectory"

    def __init__(self, segment_path: Callable[[int], Path], topology, frame_steps: int,
                 timestep_ps: float, frames_per_segment: int | None = None,
                 stray_glob: str | None = None):
        self._path = segment_path
        self._topology = topology
        self._frame_steps = int(frame_steps)
        self._timestep_ps = float(timestep_ps)
        self._per_segment = int(frames_per_segment) if frames_per_segment else None
        self._stray_glob = stray_glob
        self._handle = None
        self._dcd = None
        self._segment = None
        self._count = 0
        self._imager: FrameImager | None = None  # built from the Context at the first frame

    # -- layout -----------------------------------------------------------
    def _segment_of(self, frame: int) -> tuple[int, int]:
        """``(segment, position in segment)`` of a 0-based frame index."""
        if self._per_segment is None:
            return 0, frame
        return divmod(frame, self._per_segment)

    def _first_step(self, segment: int) -> int:
        first_frame = 0 if self._per_segment is None else segment * self._per_segment
        return (first_frame + 1) * self._frame_steps

    def _existing_segments(self) -> list[Path]:
        found, segment = set(), 0
        while Path(self._path(segment)).exists():
            found.add(Path(self._path(segment)))
            if self._per_segment is None:
                break
            segment += 1
        if self._stray_glob:
            found.update(Path(self._path(0)).parent.glob(self._stray_glob))
        return sorted(found)

    def _check_segment(self, segment: int, path: Path):
        info = inspect_dcd(path)
        if self._topology is not None and info.n_atoms != self._topology.getNumAtoms():
            raise ResumeMismatchError(
                f"{path} holds {info.n_atoms} atoms but the system has "
                f"{self._topology.getNumAtoms()}: it belongs to another system; move it away"
            )
        expected = self._first_step(segment)
        if info.first_step != expected or info.interval != self._frame_steps:
            raise ResumeMismatchError(
                f"{path} starts at step {info.first_step} with {info.interval} steps per frame, "
                f"but the present frame and checkpoint intervals put it at step {expected} with "
                f"{self._frame_steps}: restore the PROTBENCH_FRAME/PROTBENCH_CHECKPOINT (and "
                f"timestep) values this run started with"
            )
        return info

    # -- FrameReporter ------------------------------------------------------
    def frames_on_disk(self) -> int:
        total, segment = 0, 0
        while True:
            path = Path(self._path(segment))
            if not path.exists():
                return total
            try:
                info = self._check_segment(segment, path)
            except DCDFormatError:
                return total  # header torn by a kill: the segment holds nothing usable
            if self._per_segment is None:
                return info.n_frames
            held = min(info.n_frames, self._per_segment)
            total += held
            if held < self._per_segment:
                return total
            segment += 1

    def truncate(self, n_frames: int) -> None:
        self.close()
        last, kept = self._segment_of(n_frames)
        for path in self._existing_segments():
            index = self._index_of(path)
            if index is None:
                continue
            if index < last or (index == last and kept > 0):
                try:
                    truncate_dcd(path, self._per_segment if index < last else kept)
                except DCDFormatError:
                    path.unlink()
            else:
                path.unlink()

    def _index_of(self, path: Path) -> int | None:
        if self._per_segment is None:
            return 0 if path == Path(self._path(0)) else None
        match = re.search(r"(\d+)\D*$", path.name)
        if match is None:
            return None
        index = int(match.group(1))
        return index if Path(self._path(index)) == path else None

    def open(self, n_frames: int) -> None:
        self.close()
        self._count = int(n_frames)
        segment, position = self._segment_of(self._count)
        if position:
            self._start_segment(segment, append=True)

    def _start_segment(self, segment: int, append: bool) -> None:
        from openmm.app import DCDFile

        if self._handle is not None:
            _fsync(self._handle)
            self._handle.close()
        path = Path(self._path(segment))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "r+b" if append else "w+b")
        self._dcd = DCDFile(self._handle, self._topology, self._timestep_ps,
                            self._first_step(segment), self._frame_steps, append)
        self._segment = segment

    def report(self, frame: Frame) -> None:
        segment, _ = self._segment_of(self._count)
        if segment != self._segment:
            self._start_segment(segment, append=False)
        state = frame.state
        if self._topology.getPeriodicBoxVectors() is None:
            self._dcd.writeModel(state.getPositions(asNumpy=True))
        else:
            self._dcd.writeModel(self._imaged(frame), periodicBoxVectors=state.getPeriodicBoxVectors())
        self._count += 1

    def _imaged(self, frame: Frame):
        """The frame's positions, protein whole and centred, molecules in the box (:mod:`.imaging`)."""
        import openmm.unit as unit

        if self._imager is None:
            self._imager = FrameImager.of(frame.context, self._topology)
        state = frame.state
        return self._imager(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                            state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
                            ) * unit.nanometer

    def flush(self, durable: bool = False) -> None:
        if self._handle is not None:
            # DCDFile flushes after every frame; only durability is left to do.
            if durable:
                _fsync(self._handle)

    def close(self) -> None:
        if self._handle is not None:
            _fsync(self._handle)
            self._handle.close()
        self._handle = self._dcd = self._segment = None


class ResumeMismatchError(ProtbenchError, RuntimeError):
    """Outputs on disk were written with settings that differ from the present ones."""


class TextTableReporter(FrameReporter):
    """A text file of ``#`` header lines then one line per frame.

    Subclasses give :attr:`header` and :meth:`row`. A kill can leave a partial
    last line; it is never counted and :meth:`truncate` removes it.
    """

    header: str = ""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._handle = None

    def row(self, frame: Frame) -> str:
        raise NotImplementedError

    def _scan(self) -> tuple[int, list[int]]:
        """``(bytes of a complete header, end offset of each complete data line)``."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0, []
        header_end, ends, start = 0, [], 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            line = data[start:newline]
            if line.startswith(b"#") and not ends:
                header_end = newline + 1
            elif line.strip():
                ends.append(newline + 1)
            start = newline + 1
        if header_end == 0:
            ends = []  # a header torn by a kill: the file holds nothing usable
        return header_end, ends

    def frames_on_disk(self) -> int:
        return len(self._scan()[1])

    def truncate(self, n_frames: int) -> None:
        self.close()
        header_end, ends = self._scan()
        if header_end == 0 or n_frames <= 0:
            self.path.unlink(missing_ok=True)
            return
        keep = ends[min(n_frames, len(ends)) - 1] if n_frames and ends else header_end
        with open(self.path, "r+b") as handle:
            handle.truncate(keep)
            _fsync(handle)

    def open(self, n_frames: int) -> None:
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if n_frames == 0 or not self.path.exists():
            self._handle = open(self.path, "w")
            self._handle.write(self.header + "\n")
            self._handle.flush()
        else:
            self._handle = open(self.path, "a")

    def report(self, frame: Frame) -> None:
        self._handle.write(self.row(frame) + "\n")

    def flush(self, durable: bool = False) -> None:
        if self._handle is not None:
            self._handle.flush()
            if durable:
                os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            _fsync(self._handle)
            self._handle.close()
            self._handle = None


class StateDataReporter(TextTableReporter):
    """Step, time, energies, temperature, volume and speed: one CSV line per frame.

    The columns and header follow OpenMM's ``StateDataReporter`` so existing
    habits (``tail S-production.out``) and tools keep working.

    Parameters
    ----------
    path : path-like
    system : openmm.System or None
        For the degrees of freedom behind the temperature; ``None`` makes a
        reporter that can only inspect and cut the file.
    """

    needs = frozenset({"energy"})
    name = "state data"
    header = ('#"Step","Time (ps)","Potential Energy (kJ/mole)","Kinetic Energy (kJ/mole)",'
              '"Total Energy (kJ/mole)","Temperature (K)","Box Volume (nm^3)","Speed (ns/day)"')

    def __init__(self, path: Path | str, system):
        super().__init__(path)
        self._dof = _degrees_of_freedom(system) if system is not None else None

    def row(self, frame: Frame) -> str:
        import openmm.unit as unit

        state = frame.state
        potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperature = 2 * kinetic / (self._dof * MOLAR_GAS_CONSTANT_KJ_PER_MOL_K) if self._dof else 0.0
        volume = state.getPeriodicBoxVolume().value_in_unit(unit.nanometer ** 3)
        return (f"{frame.step},{state.getTime().value_in_unit(unit.picosecond):.4f},"
                f"{potential:.6f},{kinetic:.6f},{potential + kinetic:.6f},{temperature:.4f},"
                f"{volume:.6f},{frame.ns_per_day:.4g}")


def _degrees_of_freedom(system) -> int:
    import openmm

    dof = sum(3 for i in range(system.getNumParticles()) if system.getParticleMass(i)._value > 0)
    for i in range(system.getNumConstraints()):
        p1, p2, _ = system.getConstraintParameters(i)
        if system.getParticleMass(p1)._value > 0 or system.getParticleMass(p2)._value > 0:
            dof -= 1
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    return dof


class CVReporter(TextTableReporter):
    """The first collective variable of a ``CustomCVForce``: ``step value`` per frame.

    Parameters
    ----------
    path : path-like
    cv_force : openmm.CustomCVForce
        The force *as added to the System of the Context* being run.
    """

    name = "collective variable"
    header = '#"Step" "CV"'

    def __init__(self, path: Path | str, cv_force):
        super().__init__(path)
        self._force = cv_force

    def row(self, frame: Frame) -> str:
        value = self._force.getCollectiveVariableValues(frame.context)[0]
        return f"{frame.step} {value:.10g}"


def read_cv_file(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of every complete line of a CV file written by :class:`CVReporter`."""
    reporter = CVReporter(path, None)
    header_end, ends = reporter._scan()
    if not ends:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    text = Path(path).read_bytes()[header_end:ends[-1]].decode()
    table = np.loadtxt(text.splitlines(), ndmin=2)
    return table[:, 0].astype(np.int64), table[:, 1]


class ProgressRecorder:
    """Keeps a stage's :class:`~protbench_nrp.records.Progress` JSON up to date.

    Parameters
    ----------
    path : path-like
    phase : str
        ``"equilibration"`` or ``"production"`` (``"finished"`` is written by
        :meth:`finish`).
    total_steps : int
    **ran_with
        ``timestep_fs``, ``frame_ps`` and ``steps_after_phase`` of the
        record (:class:`~protbench_nrp.records.Progress`).
    """

    def __init__(self, path: Path | str, phase: str, total_steps: int, recoveries: int = 0, **ran_with):
        self.path = Path(path)
        self.phase = phase
        self.total_steps = int(total_steps)
        self.recoveries = int(recoveries)
        self.ran_with = ran_with

    def update(self, step: int, ns_per_day: float, recoveries: int | None = None) -> None:
        if recoveries is not None:
            self.recoveries = int(recoveries)
        self._write(self.phase, step, ns_per_day)

    def finish(self, step: int, ns_per_day: float) -> None:
        self._write("finished", step, ns_per_day)

    def blew_up(self, step: int, recoveries: int) -> None:
        """Record a stage stopped by a blow-up it could not recover from, at its last good step."""
        self.recoveries = int(recoveries)
        self._write("blew-up", step, 0.0)

    def _write(self, phase: str, step: int, ns_per_day: float) -> None:
        Progress.now(phase, step, self.total_steps, ns_per_day, self.recoveries,
                     **self.ran_with).write(self.path)
