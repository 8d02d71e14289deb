"""The simulation engine every MD script of a campaign runs on.

A pod may be evicted at any moment and restarted on another GPU model, so a
stage of MD (an equilibration, a steered pull, an umbrella production) is run
by :class:`ResumableStage`, which turns every interruption into a short pause:

* frames are taken every ``frame_steps`` steps and handed to resumable
  reporters (:mod:`protbench_nrp.reporters`);
* checkpoints are written atomically, after the reporters' frames are made
  durable, every ``checkpoint_frames`` frames, every ``checkpoint_minutes`` of
  wall-clock time, on SIGTERM/SIGINT and at the end; beside each one goes a
  *portable* State XML that loads on any platform;
* on restart, :meth:`ResumableStage.resume` picks the newest starting point
  that loads here and that the reporters hold every frame of (checkpoint,
  portable checkpoint, saved states newest first, then the caller's
  fallbacks), and cuts every reporter back to exactly that frame;
* a blow-up (a non-finite energy or position, or OpenMM's "Particle
  coordinate is NaN") is caught before any reporter sees the frame: the stage
  goes back to its newest good starting point, cuts every output back to it,
  draws new velocities from a new seed (derived from the integrator's own seed
  when it has one, so a seeded run recovers the same way every time) and
  carries on; after ``max_blowups``
  such attempts that fail to get past the same point it raises
  :class:`BlownUpError`, which scripts turn into exit status
  :data:`EXIT_BLOWN_UP`.

The building blocks are small and usable alone: :func:`select_platform`,
:func:`langevin_integrator`, :func:`set_barostat`, :class:`StopSignals`,
:class:`Schedule`, :class:`CheckpointFiles` and the origins
(:class:`CheckpointOrigin`, :class:`StateOrigin`, :class:`InitialOrigin`).

Units are explicit at every boundary: ``_fs``, ``_ps``, ``_ns``, ``_kelvin``,
``_atm`` and ``_nm`` in names; OpenMM quantities are only built here.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .dcd import DCDFormatError, read_dcd
from .errors import ProtbenchError
from .exits import EXIT_BLOWN_UP
from .files import TEMP_SUFFIX, atomic_write
from .reporters import Frame, FrameReporter, ProgressRecorder, ResumeMismatchError
from .science import BAROSTAT_FREQUENCY, FRICTION_PER_PS, MAX_BLOWUPS, MAX_SEED, PLATFORMS

PRECISIONS = ("single", "mixed", "double")

#: What ``PROTBENCH_DETERMINISTIC_FORCES`` does on each platform: the OpenMM platform property it
#: sets to ``"true"``, ``None`` where nothing needs setting (Reference sums its forces in one fixed
#: order), absent where OpenMM has no such property. OpenMM 8.6.1 lists ``DeterministicForces``
#: among the properties of CPU and CUDA, not of OpenCL, and refuses it there and on Reference with
#: "Illegal property name" (``Platform.getPropertyNames()``; tests/engine/test_deterministic_forces.py).
DETERMINISTIC_FORCES_PROPERTY: dict[str, str | None] = {
    "CUDA": "DeterministicForces", "CPU": "DeterministicForces", "Reference": None}


class EngineError(ProtbenchError, ValueError):
    """Bad settings or inputs, reported before anything is written."""


class ResumeError(ProtbenchError, RuntimeError):
    """No starting point of a stage could be loaded."""


class BlownUpError(ProtbenchError, RuntimeError):
    """A stage kept blowing up from the same point; its outputs end at that good point.

    Attributes
    ----------
    exit_code : int
        :data:`EXIT_BLOWN_UP`.
    step : int
        Where the last attempt blew up.
    good_step : int
        The point every attempt started from, where the outputs now end.
    recoveries : int
        Recoveries the stage made before giving up.
    """

    exit_code = EXIT_BLOWN_UP

    def __init__(self, message: str, step: int, good_step: int, recoveries: int):
        super().__init__(message)
        self.step, self.good_step, self.recoveries = step, good_step, recoveries


# -- platform, integrator, barostat ------------------------------------------------

def check_platform_name(name: str, precision: str = "mixed") -> str:
    """The canonical name of platform ``name``; :class:`EngineError` for an unknown platform or precision.

    Needs no OpenMM: the launcher checks a Job's settings with it.
    """
    canonical = {p.lower(): p for p in PLATFORMS}.get(str(name).lower())
    if canonical is None:
        raise EngineError(f"unknown platform {name!r}; set PROTBENCH_PLATFORM to one of "
                          f"{', '.join(PLATFORMS)}")
    if str(precision).lower() not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; set PROTBENCH_PRECISION to one of "
                          f"{', '.join(PRECISIONS)}")
    return canonical


def check_deterministic_forces(name: str, deterministic_forces: bool) -> None:
    """:class:`EngineError` when deterministic forces are asked of a platform OpenMM has none for.

    Needs no OpenMM: the launcher checks a Job's settings with it.
    """
    if not deterministic_forces:
        return
    canonical = check_platform_name(name)
    if canonical not in DETERMINISTIC_FORCES_PROPERTY:
        offered = ", ".join(DETERMINISTIC_FORCES_PROPERTY)
        raise EngineError(f"PROTBENCH_DETERMINISTIC_FORCES=true, but OpenMM's {canonical} platform has no "
                          f"DeterministicForces property (it refuses the name); set PROTBENCH_PLATFORM to "
                          f"one of {offered}, or unset PROTBENCH_DETERMINISTIC_FORCES")


def select_platform(name: str, precision: str = "mixed", deterministic_forces: bool = False):
    """Find an OpenMM platform by name and the properties that set its precision.

    Parameters
    ----------
    name : str
        ``"CUDA"``, ``"OpenCL"``, ``"CPU"`` or ``"Reference"`` (any case).
    precision : str
        ``"single"``, ``"mixed"`` or ``"double"``; ignored by platforms that
        have no ``Precision`` property (CPU, Reference).
    deterministic_forces : bool
        Sum forces in a fixed order (:data:`DETERMINISTIC_FORCES_PROPERTY`).

    Returns
    -------
    platform : openmm.Platform
    properties : dict of str to str

    Raises
    ------
    EngineError
        For an unknown platform, one this machine lacks, an unknown precision, or
        deterministic forces on a platform without them.
    """
    import openmm

    canonical = check_platform_name(name, precision)
    check_deterministic_forces(canonical, deterministic_forces)
    available = [openmm.Platform.getPlatform(i).getName()
                 for i in range(openmm.Platform.getNumPlatforms())]
    if canonical not in available:
        raise EngineError(f"platform {canonical} is not available on this machine (available: "
                          f"{', '.join(available)}); set PROTBENCH_PLATFORM to one of those")
    platform = openmm.Platform.getPlatformByName(canonical)
    properties = {}
    if "Precision" in platform.getPropertyNames():
        properties["Precision"] = str(precision).lower()
    wanted = DETERMINISTIC_FORCES_PROPERTY.get(canonical) if deterministic_forces else None
    if wanted is not None:
        if wanted not in platform.getPropertyNames():  # another OpenMM than the one the table describes
            raise EngineError(f"PROTBENCH_DETERMINISTIC_FORCES=true, but this OpenMM's {canonical} platform "
                              f"has no {wanted} property (it has: {', '.join(platform.getPropertyNames())}); "
                              f"unset PROTBENCH_DETERMINISTIC_FORCES")
        properties[wanted] = "true"
    return platform, properties


def derive_seed(seed: int, *labels) -> int:
    """A seed in ``1 .. MAX_SEED - 1`` for the stream named by ``labels``; 0 when ``seed`` is 0.

    One ``PROTBENCH_SEED`` is set for a whole campaign, so each replica,
    window and phase draws its own stream from it: the same seed in every
    Context would give every window of a replica the same random forces, and
    two replicas the same trajectory. A hash, so the result does not depend
    on Python's hash randomisation or on the platform.
    """
    if not seed:
        return 0
    text = ":".join(str(part) for part in (int(seed),) + labels)
    return 1 + int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % (MAX_SEED - 1)


def langevin_integrator(temperature_kelvin: float, timestep_fs: float,
                        friction_per_ps: float = FRICTION_PER_PS, seed: int = 0):
    """A ``LangevinMiddleIntegrator`` at ``temperature_kelvin`` with a ``timestep_fs`` step.

    ``seed`` seeds its random forces (0: OpenMM picks a new one per Context).
    """
    import openmm
    import openmm.unit as unit

    integrator = openmm.LangevinMiddleIntegrator(temperature_kelvin * unit.kelvin,
                                                 friction_per_ps / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(int(seed))
    return integrator


def set_barostat(system, temperature_kelvin: float, pressure_atm: float,
                 frequency: int = BAROSTAT_FREQUENCY, seed: int = 0) -> None:
    """Make ``system`` carry exactly one Monte Carlo barostat at ``pressure_atm``, or none for 0.

    The barostat attempts a volume move every ``frequency`` steps, drawing
    its moves from ``seed`` (0: OpenMM picks a new one per Context).

    Any barostat already in the System is removed first, so the pressure of
    the run is the one configured, whatever the setup stage left in the XML.

    Raises
    ------
    EngineError
        For a negative pressure, or a pressure on a non-periodic System.
    """
    import openmm
    import openmm.unit as unit

    if pressure_atm < 0 or not math.isfinite(pressure_atm):
        raise EngineError(f"pressure {pressure_atm} atm is not a pressure; set PROTBENCH_PRESSURE "
                          f"to a value >= 0 (0 = no barostat)")
    for index in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(index), (openmm.MonteCarloBarostat,
                                               openmm.MonteCarloAnisotropicBarostat,
                                               openmm.MonteCarloFlexibleBarostat,
                                               openmm.MonteCarloMembraneBarostat)):
            system.removeForce(index)
    if pressure_atm == 0:
        return
    if not system.usesPeriodicBoundaryConditions():
        raise EngineError(f"a pressure of {pressure_atm} atm needs a periodic system, but this "
                          f"System is not periodic (vacuum or implicit solvent); set "
                          f"PROTBENCH_PRESSURE=0")
    barostat = openmm.MonteCarloBarostat(pressure_atm * unit.atmosphere,
                                         temperature_kelvin * unit.kelvin, int(frequency))
    barostat.setRandomNumberSeed(int(seed))
    system.addForce(barostat)


def create_context(system, integrator, platform_name: str = "CUDA", precision: str = "mixed",
                   deterministic_forces: bool = False):
    """A Context for ``system`` on the named platform (see :func:`select_platform`).

    pocl's OpenCL compiler resets the process's ``LC_CTYPE`` locale to ``C``
    while it builds OpenMM's kernels, after which Python opens text files as
    ASCII; the locale is put back.
    """
    import locale

    import openmm

    platform, properties = select_platform(platform_name, precision, deterministic_forces)
    ctype = locale.setlocale(locale.LC_CTYPE)
    try:
        return openmm.Context(system, integrator, platform, properties)
    finally:
        if locale.setlocale(locale.LC_CTYPE) != ctype:
            locale.setlocale(locale.LC_CTYPE, ctype)


# -- signals ---------------------------------------------------------------------------

class StopSignals:
    """Turns SIGTERM and SIGINT into a request to stop at the next frame boundary.

    Use as a context manager around a run; the previous handlers come back on
    exit. A stage polls :attr:`requested` between frames, so a signal that
    arrives during ``integrator.step`` costs nothing but the wait for that
    call to return.

    Examples
    --------
    >>> with StopSignals() as stop:
    ...     outcome = stage.run(stop)
    >>> sys.exit(stop.exit_code if outcome.stopped else 0)
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)):
        self._signals = tuple(signals)
        self._previous: dict[int, object] = {}
        self.requested: int | None = None

    def _handle(self, signum, _frame) -> None:
        self.requested = signum

    def __enter__(self) -> "StopSignals":
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def exit_code(self) -> int:
        """The shell's code for death by the received signal (143 SIGTERM, 130 SIGINT), else 0."""
        return 128 + int(self.requested) if self.requested else 0


# -- files written atomically: see files.py ------------------------------------------

def remove_stale_temporaries(directory: Path | str) -> list[Path]:
    """Delete temporary files that a kill left behind in ``directory`` mid atomic write."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def state_xml(context) -> str:
    """Serialized portable State of ``context``: positions, velocities, box, parameters, step, time."""
    import openmm

    state = context.getState(getPositions=True, getVelocities=True, getParameters=True,
                             getIntegratorParameters=True)
    return openmm.XmlSerializer.serialize(state)


def save_state_xml(context, path: Path | str) -> None:
    """Write the portable State of ``context`` to ``path`` atomically."""
    atomic_write(path, state_xml(context))


def load_state_xml(path: Path | str):
    """Deserialize a State XML file; raises ``ValueError`` naming the file when it is not one."""
    import openmm

    text = Path(path).read_text()
    try:
        state = openmm.XmlSerializer.deserialize(text)
    except Exception as error:
        raise ValueError(f"{path} is not a serialized OpenMM State ({error})") from None
    if not isinstance(state, openmm.State):
        raise ValueError(f"{path} holds a serialized {type(state).__name__}, not a State")
    return state


_STEP_COUNT = re.compile(rb'<State\b[^>]*\bstepCount="(\d+)"')


def state_xml_step(path: Path | str) -> int | None:
    """Step count recorded in a State XML file, read from its first line; ``None`` if unreadable."""
    try:
        with open(path, "rb") as handle:
            match = _STEP_COUNT.search(handle.read(4096))
    except OSError:
        return None
    return int(match.group(1)) if match else None


# -- schedule ------------------------------------------------------------------------

def _whole(value: float, what: str) -> int:
    nearest = round(value)
    if nearest < 1 or abs(value - nearest) > 1e-6 * max(1.0, abs(value)):
        raise EngineError(what)
    return int(nearest)


@dataclass(frozen=True)
class Schedule:
    """When a stage takes frames, checkpoints and saved states, in steps and frames.

    Attributes
    ----------
    total_steps : int
    frame_steps : int
        Steps between frames; divides ``total_steps``.
    checkpoint_frames : int or None
        Frames between scheduled checkpoints (``None``: only wall-clock, stop
        and final checkpoints).
    save_state_frames : int or None
        Frames between saved States (``None``: none).
    checkpoint_minutes : float or None
        Wall-clock minutes after which the next frame boundary also checkpoints.
    """

    total_steps: int
    frame_steps: int
    checkpoint_frames: int | None = None
    save_state_frames: int | None = None
    checkpoint_minutes: float | None = None

    @property
    def total_frames(self) -> int:
        return self.total_steps // self.frame_steps

    @classmethod
    def from_times(cls, length_ns: float, timestep_fs: float, frame_ps: float,
                   checkpoint_ps: float | None = None, save_state_ps: float | None = None,
                   checkpoint_minutes: float | None = None, names: dict[str, str] | None = None,
                   ) -> "Schedule":
        """Convert physical intervals to steps and frames, checking that they fit together.

        ``names`` maps ``"length"``, ``"timestep"``, ``"frame"``, ``"checkpoint"``,
        ``"save_state"`` and ``"minutes"`` to the setting (e.g. an environment
        variable) that sets it, so an error tells the user what to change.

        Raises
        ------
        EngineError
            For non-positive or non-finite values, a timestep that does not
            divide the frame interval, a frame interval that does not divide the
            length, or checkpoint/save-state intervals that are not multiples of
            the frame interval.
        """
        names = {"length": "length", "timestep": "timestep", "frame": "frame interval",
                 "checkpoint": "checkpoint interval", "save_state": "save-state interval",
                 "minutes": "checkpoint minutes", **(names or {})}
        for key, value, unit in (("length", length_ns, "ns"), ("timestep", timestep_fs, "fs"),
                                 ("frame", frame_ps, "ps"), ("checkpoint", checkpoint_ps, "ps"),
                                 ("save_state", save_state_ps, "ps"),
                                 ("minutes", checkpoint_minutes, "min")):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise EngineError(f"{names[key]} = {value} {unit} must be a positive number")
        frame_steps = _whole(frame_ps * 1000.0 / timestep_fs,
                             f"{names['timestep']} = {timestep_fs} fs does not divide "
                             f"{names['frame']} = {frame_ps} ps into whole steps")
        total_frames = _whole(length_ns * 1000.0 / frame_ps,
                              f"{names['frame']} = {frame_ps} ps does not divide "
                              f"{names['length']} = {length_ns} ns into whole frames")

        def frames(ps, key):
            if ps is None:
                return None
            return _whole(ps / frame_ps, f"{names[key]} = {ps} ps is not a whole multiple of "
                                         f"{names['frame']} = {frame_ps} ps")

        return cls(total_frames * frame_steps, frame_steps, frames(checkpoint_ps, "checkpoint"),
                   frames(save_state_ps, "save_state"), checkpoint_minutes)


# -- where a stage may start from -------------------------------------------------------

class Origin:
    """A starting point of a stage: loads itself into a Context or raises."""

    description = "origin"

    def load(self, context) -> None:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.description


class CheckpointOrigin(Origin):
    """An OpenMM checkpoint; loads only on the platform and hardware that wrote it."""

    def __init__(self, path: Path | str, description: str = "checkpoint"):
        self.path = Path(path)
        self.description = f"{description} {self.path.name}"

    def load(self, context) -> None:
        context.loadCheckpoint(self.path.read_bytes())


class StateOrigin(Origin):
    """A State XML file: portable to any platform.

    Parameters
    ----------
    path : path-like
    step : int, optional
        Reset the step count (and time) to this, e.g. 0 when a production
        starts from an equilibrated state.
    """

    def __init__(self, path: Path | str, step: int | None = None, description: str = "state"):
        self.path = Path(path)
        self.step = step
        self.description = f"{description} {self.path.name}"

    def load(self, context) -> None:
        context.setState(load_state_xml(self.path))
        if self.step is not None:
            context.setStepCount(int(self.step))
            context.setTime(0.0)


class InitialOrigin(Origin):
    """A fresh start: given positions, optional box, velocities drawn at a temperature.

    Parameters
    ----------
    positions_nm : array-like, shape (n_atoms, 3)
    box_vectors_nm : array-like, shape (3, 3), optional
        Applied only when the System is periodic.
    temperature_kelvin : float, optional
        Draw Maxwell-Boltzmann velocities; otherwise velocities are zero.
    seed : int, optional
        Seed of those velocities; 0 (the default) draws a new one each time.
    """

    def __init__(self, positions_nm, box_vectors_nm=None, temperature_kelvin: float | None = None,
                 description: str = "initial structure", seed: int = 0):
        self.positions_nm = np.asarray(positions_nm, dtype=float)
        self.box_vectors_nm = None if box_vectors_nm is None else np.asarray(box_vectors_nm, float)
        self.temperature_kelvin = temperature_kelvin
        self.description = description
        self.seed = int(seed)

    def load(self, context) -> None:
        import openmm.unit as unit

        if self.box_vectors_nm is not None and context.getSystem().usesPeriodicBoundaryConditions():
            context.setPeriodicBoxVectors(*(v * unit.nanometer for v in self.box_vectors_nm))
        context.setPositions(self.positions_nm * unit.nanometer)
        if self.temperature_kelvin is not None:
            # OpenMM takes a seed of 0 literally, so "random" means passing none.
            seeded = (self.seed,) if self.seed else ()
            context.setVelocitiesToTemperature(self.temperature_kelvin * unit.kelvin, *seeded)
        else:
            context.setVelocities(np.zeros_like(self.positions_nm) * unit.nanometer / unit.picosecond)
        context.setStepCount(0)
        context.setTime(0.0)


# -- checkpoints ----------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointFiles:
    """Where a stage keeps its checkpoint, portable checkpoint and saved States.

    Attributes
    ----------
    checkpoint : Path
        OpenMM checkpoint (exact continuation, same platform and hardware only).
    portable : Path or None
        State XML written beside every checkpoint (any platform).
    saved_state : callable or None
        ``saved_state(n) -> Path`` of the n-th saved State (n from 1), taken
        every ``Schedule.save_state_frames`` frames and kept.
    """

    checkpoint: Path
    portable: Path | None = None
    saved_state: Callable[[int], Path] | None = None

    def write(self, context) -> None:
        """Write the checkpoint, then its portable twin, each atomically and durably."""
        atomic_write(self.checkpoint, context.createCheckpoint())
        if self.portable is not None:
            save_state_xml(context, self.portable)

    def origins(self, schedule: Schedule) -> list[Origin]:
        """This stage's own starting points, newest first."""
        found: list[Origin] = [CheckpointOrigin(self.checkpoint)]
        if self.portable is not None:
            found.append(StateOrigin(self.portable, description="portable checkpoint"))
        if self.saved_state is not None and schedule.save_state_frames:
            for n in range(schedule.total_frames // schedule.save_state_frames, 0, -1):
                found.append(StateOrigin(self.saved_state(n), description="saved state"))
        return found

    def discard_saved_states_after(self, frames: int, schedule: Schedule) -> None:
        """Delete saved States beyond frame ``frames``: they belong to an abandoned history."""
        if self.saved_state is None or not schedule.save_state_frames:
            return
        for n in range(frames // schedule.save_state_frames + 1,
                       schedule.total_frames // schedule.save_state_frames + 1):
            Path(self.saved_state(n)).unlink(missing_ok=True)

    def newest_step(self) -> int | None:
        """Step of the portable checkpoint, read without a Context (``None`` if absent)."""
        return state_xml_step(self.portable) if self.portable is not None else None


# -- the run loop -------------------------------------------------------------------

def frames_held(reporters: Sequence[FrameReporter], schedule: Schedule) -> int:
    """Fewest whole frames any of ``reporters`` holds on disk (reads only)."""
    return min((r.frames_on_disk() for r in reporters), default=schedule.total_frames)


def finished_on_disk(schedule: Schedule, checkpoint: CheckpointFiles,
                     reporters: Sequence[FrameReporter]) -> bool:
    """Whether a stage is complete on disk: portable checkpoint at the end and every frame held.

    Reads only and needs no Context, so a finished stage is recognised at
    once; reporters built without a topology or System can answer it.
    """
    step = checkpoint.newest_step()
    return (step is not None and step >= schedule.total_steps
            and frames_held(reporters, schedule) >= schedule.total_frames)


@dataclass(frozen=True)
class Resumed:
    """Where :meth:`ResumableStage.resume` put the Context.

    Attributes
    ----------
    origin : Origin
    step : int
    frames : int
        Frames every reporter now holds.
    skipped : list of str
        Newer starting points that were not used, and why.
    """

    origin: Origin
    step: int
    frames: int
    skipped: tuple[str, ...]


@dataclass(frozen=True)
class StageOutcome:
    """How :meth:`ResumableStage.run` ended.

    Attributes
    ----------
    step : int
    finished : bool
        The stage reached ``Schedule.total_steps``.
    signal : int or None
        The signal that stopped it early.
    ns_per_day : float
    """

    step: int
    finished: bool
    signal: int | None
    ns_per_day: float
    #: Blow-ups the stage recovered from.
    recoveries: int = 0

    @property
    def stopped(self) -> bool:
        return not self.finished


class ResumableStage:
    """One stage of MD that can be killed at any instant and resumed exactly.

    Parameters
    ----------
    context : openmm.Context
    schedule : Schedule
    checkpoint : CheckpointFiles
    reporters : list of FrameReporter
    progress : ProgressRecorder, optional
        Refreshed every frame.
    controllers : list, optional
        Objects with ``update(context, step)``, called before each stretch of
        steps up to the next frame (e.g. to move a restraint centre in
        steered MD). They must derive everything from ``step`` so that a
        resumed run does what the uninterrupted one would have.
    log : callable, optional
        Receives one line per notable event; defaults to printing to stdout.
    name : str, optional
        What the stage is (e.g. ``"window 03 production"``), named in a blow-up's message.
    max_blowups : int, optional
        Recovery attempts from one point before :meth:`run` raises :class:`BlownUpError`.
    advice : str, optional
        What to try after an unrecoverable blow-up (the timestep variable, the
        starting structure), appended to the message.

    Notes
    -----
    Every frame is checked before any reporter sees it: a non-finite
    potential or kinetic energy, position or box is a blow-up, and so is an
    ``OpenMMException`` about a NaN.

    Write order at a checkpoint: reporters are flushed and fsync-ed, then the
    saved State (when due), then the checkpoint and its portable twin, each
    atomically. A checkpoint therefore never claims a frame the reporters do
    not hold, whatever instant a kill strikes.
    """

    def __init__(self, context, schedule: Schedule, checkpoint: CheckpointFiles,
                 reporters: Sequence[FrameReporter] = (), progress: ProgressRecorder | None = None,
                 controllers: Sequence = (), log: Callable[[str], None] | None = None,
                 name: str = "stage", max_blowups: int = MAX_BLOWUPS, advice: str = ""):
        if int(max_blowups) != max_blowups or max_blowups < 0:
            raise EngineError(f"max_blowups {max_blowups} must be a whole number >= 0; set "
                              f"PROTBENCH_MAX_BLOWUPS")
        self.context = context
        self.schedule = schedule
        self.checkpoint = checkpoint
        self.reporters = list(reporters)
        self.progress = progress
        self.controllers = list(controllers)
        self.log = log or _print_line
        self.name, self.max_blowups, self.advice = name, int(max_blowups), advice
        self.recoveries = 0
        # Read before any recovery reseeds the integrator: every recovery derives from it.
        self._seed = int(context.getIntegrator().getRandomNumberSeed())
        self._resumed: Resumed | None = None
        self._fallbacks: list[Origin] = []
        needs = set().union(*(r.needs for r in self.reporters)) if self.reporters else set()
        # Energy and positions are always read: every frame is checked before it is written.
        self._state_args = {"getPositions": True, "getVelocities": "velocities" in needs,
                            "getEnergy": True}
        self._periodic = context.getSystem().usesPeriodicBoundaryConditions()

    # -- inspection -------------------------------------------------------------
    def frames_held(self) -> int:
        """Fewest whole frames any reporter holds on disk (reads only)."""
        return frames_held(self.reporters, self.schedule)

    def finished_on_disk(self) -> bool:
        """See :func:`finished_on_disk`."""
        return finished_on_disk(self.schedule, self.checkpoint, self.reporters)

    # -- resume -------------------------------------------------------------------
    def resume(self, fallbacks: Iterable[Origin] = ()) -> Resumed:
        """Load the newest usable starting point and cut every reporter back to it.

        Candidates, newest first: the checkpoint, the portable checkpoint, the
        saved States, then ``fallbacks`` in the order given. A candidate is
        used when it loads on this platform and every reporter holds all the
        frames up to its step; a kill can leave reporters ahead of the
        checkpoint (they are cut back) and an interrupted upload can leave
        them behind it (an older candidate is used).

        Raises
        ------
        ResumeError
            When no candidate qualifies.
        ResumeMismatchError
            When outputs on disk were written with other settings.
        """
        for reporter in self.reporters:
            reporter.close()
        self._fallbacks = list(fallbacks)
        held = self.frames_held()
        skipped = []
        for origin in self.checkpoint.origins(self.schedule) + self._fallbacks:
            if isinstance(origin, (CheckpointOrigin, StateOrigin)) and not origin.path.exists():
                continue
            try:
                origin.load(self.context)
            except Exception as error:  # a checkpoint from another GPU, a torn or alien file
                skipped.append(f"{origin}: {_first_line(error)}")
                continue
            step = self.context.getStepCount()
            frames = step // self.schedule.frame_steps
            if step > self.schedule.total_steps:
                raise ResumeMismatchError(
                    f"{origin} is at step {step}, beyond the {self.schedule.total_steps} steps of "
                    f"this stage; restore the length setting this run started with"
                )
            if frames > held:
                skipped.append(f"{origin}: at frame {frames}, but the outputs hold only {held}")
                continue
            for reporter in self.reporters:
                reporter.truncate(frames)
            self.checkpoint.discard_saved_states_after(frames, self.schedule)
            if not isinstance(origin, CheckpointOrigin):
                # Newer checkpoints on disk describe a history the reporters no
                # longer hold (or another GPU); replace them before a kill could
                # make a later restart resume from them over these frames.
                self.checkpoint.write(self.context)
            self._resumed = Resumed(origin, step, frames, tuple(skipped))
            for line in skipped:
                self.log(f"skipped {line}")
            self.log(f"starting from {origin} at step {step} "
                     f"(frame {frames} of {self.schedule.total_frames})")
            return self._resumed
        raise ResumeError("no starting point could be loaded: " + "; ".join(skipped or ["none exist"]))

    # -- run ------------------------------------------------------------------------
    def run(self, stop: StopSignals | None = None) -> StageOutcome:
        """Integrate to the end of the stage, or until ``stop`` is requested.

        Call :meth:`resume` first. On a stop request the loop finishes the
        frame it is in, writes a checkpoint consistent with every reporter and
        returns; the caller then exits with ``stop.exit_code``.
        """
        if self._resumed is None:
            raise RuntimeError("call resume() before run()")
        schedule, context = self.schedule, self.context
        integrator = context.getIntegrator()
        timestep_ps = _picoseconds(integrator.getStepSize())
        step = context.getStepCount()
        frame = step // schedule.frame_steps
        for reporter in self.reporters:
            reporter.open(frame)
        started, first_step = time.monotonic(), step
        last_checkpoint = started
        speed = 0.0
        minutes = schedule.checkpoint_minutes
        # The parameters the caller set (k, Q0, ...): put back after a recovery loads an
        # origin that lacks them (an unbiased equilibrated state, a fresh start).
        parameters = dict(context.getParameters())
        blowups_here, blowup_point = 0, None
        try:
            while step < schedule.total_steps:
                if stop is not None and stop.requested:
                    break
                for controller in self.controllers:
                    controller.update(context, step)
                target = step + schedule.frame_steps - step % schedule.frame_steps
                state, problem = self._advance(target - step)
                if problem is not None:
                    good = self._recover(target, problem, parameters)
                    blowups_here = blowups_here + 1 if good == blowup_point else 1
                    blowup_point = good
                    if blowups_here > self.max_blowups:
                        raise self._give_up(target, good, problem, blowups_here - 1)
                    self.recoveries += 1
                    self._start_over(good)
                    step = good
                    for reporter in self.reporters:
                        reporter.open(step // schedule.frame_steps)
                    started, first_step = time.monotonic(), step
                    continue
                step = context.getStepCount()
                frame = step // schedule.frame_steps
                elapsed = time.monotonic() - started
                speed = _ns_per_day(step - first_step, timestep_ps, elapsed)
                self._report(frame - 1, step, speed, state)
                # The last frame's record waits for the final checkpoint: a record
                # saying "all steps done" must never precede the state that proves it.
                if self.progress is not None and step < schedule.total_steps:
                    self.progress.update(step, speed, self.recoveries)
                save_due = bool(schedule.save_state_frames) and frame % schedule.save_state_frames == 0
                checkpoint_due = (
                    (schedule.checkpoint_frames and frame % schedule.checkpoint_frames == 0)
                    or (minutes is not None and time.monotonic() - last_checkpoint >= 60.0 * minutes)
                    or save_due or step >= schedule.total_steps
                    or (stop is not None and stop.requested)
                )
                if checkpoint_due:
                    self._checkpoint(frame if save_due else None)
                    last_checkpoint = time.monotonic()
            if (step >= schedule.total_steps and self.checkpoint.portable is not None
                    and self.checkpoint.newest_step() != step):
                # resumed at the end from a checkpoint whose portable twin a kill prevented
                self._checkpoint(None)
        finally:
            for reporter in self.reporters:
                reporter.close()
        finished = step >= schedule.total_steps
        if not finished:
            self.log(f"stopped by signal {stop.requested} at step {step}; checkpoint written")
        return StageOutcome(step, finished, None if finished else stop.requested, speed,
                            self.recoveries)

    # -- blow-ups -------------------------------------------------------------------
    def _advance(self, steps: int):
        """Integrate ``steps``; return ``(state, None)``, or ``(None, what blew up)``."""
        import openmm

        try:
            self.context.getIntegrator().step(steps)
            state = self.context.getState(enforcePeriodicBox=self._periodic, **self._state_args)
        except openmm.OpenMMException as error:
            if not _NAN_ERROR.search(str(error)):
                raise
            return None, _first_line(error)
        return state, non_finite(state)

    def _recover(self, step: int, problem: str, parameters: dict) -> int:
        """Go back to the newest good starting point, outputs cut to it; return its step."""
        self.log(f"{self.name} blew up at step {step} ({problem}); going back to the newest "
                 f"good state")
        resumed = self.resume(self._fallbacks)
        for name, value in parameters.items():
            self.context.setParameter(name, value)
        return resumed.step

    def _start_over(self, good_step: int) -> None:
        """New velocities from a new seed, so the next attempt takes another path.

        A seeded integrator gives the n-th recovery a seed derived from its own
        and n, so a seeded run recovers the same way every time.
        """
        import openmm.unit as unit

        integrator = self.context.getIntegrator()
        seed = (derive_seed(self._seed, "recovery", self.recoveries) if self._seed
                else random.SystemRandom().randrange(1, MAX_SEED))
        # Takes effect in the next Context; this one keeps the checkpoint's random stream,
        # which the new velocities send down another path (reseeding it would mean
        # reinitializing the Context: recompiling every GPU kernel).
        integrator.setRandomNumberSeed(seed)
        if hasattr(integrator, "getTemperature"):
            self.context.setVelocitiesToTemperature(integrator.getTemperature(), seed)
        else:
            positions = self.context.getState(getPositions=True).getPositions(asNumpy=True)
            self.context.setVelocities(0 * positions / unit.picosecond)
        self.log(f"recovery {self.recoveries}: new velocities (seed {seed}) from step {good_step}")

    def _give_up(self, step: int, good_step: int, problem: str, attempts: int) -> BlownUpError:
        q = self._collective_variable()
        q_text = f"Q = {q:.4f}" if q is not None else "Q unknown"
        if self.progress is not None:
            self.progress.blew_up(good_step, self.recoveries)
        advice = f": {self.advice}" if self.advice else ""
        tried = (f"{attempts} recovery attempt(s) from step {good_step} ({q_text} at the last good "
                 f"frame) all blew up again" if attempts else
                 f"no recovery was tried from step {good_step} ({q_text} at the last good frame)")
        return BlownUpError(
            f"{self.name} blew up at step {step} ({problem}) and {tried} "
            f"(PROTBENCH_MAX_BLOWUPS={self.max_blowups}). Its outputs end at step {good_step}, "
            f"finite, and it resumes from there. Try a smaller timestep, or check the starting "
            f"structure{advice}", step, good_step, self.recoveries)

    def _collective_variable(self) -> float | None:
        from .contacts import MissingUmbrellaForceError, find_umbrella_force

        try:
            index, _ = find_umbrella_force(self.context.getSystem())
        except MissingUmbrellaForceError:
            return None
        force = self.context.getSystem().getForce(index)  # the Context's own copy
        return float(force.getCollectiveVariableValues(self.context)[0])

    def _report(self, index: int, step: int, speed: float, state) -> None:
        frame = Frame(index, step, state, self.context, speed)
        for reporter in self.reporters:
            reporter.report(frame)
        for reporter in self.reporters:
            reporter.flush()

    def _checkpoint(self, save_frame: int | None) -> None:
        for reporter in self.reporters:
            reporter.flush(durable=True)
        if save_frame is not None and self.checkpoint.saved_state is not None:
            save_state_xml(self.context,
                           self.checkpoint.saved_state(save_frame // self.schedule.save_state_frames))
        self.checkpoint.write(self.context)


#: OpenMM's own blow-up errors ("Particle coordinate is NaN", "Energy is NaN", ...).
_NAN_ERROR = re.compile(r"\bnan\b", re.IGNORECASE)


def non_finite(state) -> str | None:
    """What in ``state`` is not finite (energies, positions, box), or ``None`` when all is."""
    import openmm.unit as unit

    for what, get in (("potential energy", state.getPotentialEnergy),
                      ("kinetic energy", state.getKineticEnergy)):
        try:
            value = get().value_in_unit(unit.kilojoule_per_mole)
        except Exception:  # not requested
            continue
        if not math.isfinite(value):
            return f"{what} is {value}"
    try:
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    except Exception:
        positions = None
    if positions is not None and not np.all(np.isfinite(positions)):
        return f"{int(np.sum(~np.isfinite(positions).all(axis=1)))} particle position(s) are not finite"
    box = np.array(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
    if not np.all(np.isfinite(box)):
        return "the periodic box is not finite"
    return None


def _picoseconds(quantity) -> float:
    import openmm.unit as unit

    return quantity.value_in_unit(unit.picosecond) if unit.is_quantity(quantity) else float(quantity)


def _ns_per_day(steps: int, timestep_ps: float, seconds: float) -> float:
    if seconds <= 0:
        return 0.0
    return steps * timestep_ps / 1000.0 / (seconds / 86400.0)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _print_line(line: str) -> None:
    print(line, flush=True)


# -- controllers ----------------------------------------------------------------------

class ParameterRamp:
    """Moves a global parameter linearly with the step count (e.g. ``Q0`` in steered MD).

    ``value(step) = start + (end - start) * step / total_steps``, set before
    each stretch of steps. Derived from the step alone, so a resumed run
    ramps exactly as the uninterrupted one.
    """

    def __init__(self, name: str, start: float, end: float, total_steps: int):
        self.name, self.start, self.end, self.total_steps = name, float(start), float(end), int(total_steps)

    def value(self, step: int) -> float:
        return self.start + (self.end - self.start) * min(step, self.total_steps) / self.total_steps

    def update(self, context, step: int) -> None:
        context.setParameter(self.name, self.value(step))


# -- reading a window's production ------------------------------------------------------

def production_segments(results_root: Path | str, files) -> list[Path]:
    """Existing production DCD segments of a window (``layout.WindowFiles``), in order."""
    root = Path(results_root)
    paths, index = [], 0
    while (root / files.production_segment(index)).exists():
        paths.append(root / files.production_segment(index))
        index += 1
    return paths


def iter_production_frames(results_root: Path | str, files) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(step, positions_nm)`` of every whole production frame of a window, in order.

    Segments are read one at a time, so memory holds one segment, not the
    whole trajectory. A torn last frame (a run still going, or killed) is
    left out.
    """
    for path in production_segments(results_root, files):
        try:
            frames = read_dcd(path)
        except DCDFormatError:
            return
        for step, positions in zip(frames.steps, frames.positions_nm):
            yield int(step), positions


def read_production_frames(results_root: Path | str, files):
    """All production frames of a window as one :class:`~protbench_nrp.dcd.DCDFrames`.

    Parameters
    ----------
    results_root : path-like
        The local results root (``-o``).
    files : layout.WindowFiles
    """
    from .dcd import DCDFrames

    parts = []
    for path in production_segments(results_root, files):
        try:
            parts.append(read_dcd(path))
        except DCDFormatError:
            break
    if not parts:
        return DCDFrames(np.zeros(0, dtype=np.int64), np.zeros((0, 0, 3), np.float32), None)
    boxes = [p.box_lengths_nm for p in parts]
    return DCDFrames(np.concatenate([p.steps for p in parts]),
                     np.concatenate([p.positions_nm for p in parts]),
                     None if any(b is None for b in boxes) else np.concatenate(boxes))


__all__ = [
    "MAX_SEED", "derive_seed",
    "EXIT_BLOWN_UP", "MAX_BLOWUPS", "BlownUpError", "non_finite", "EngineError", "ResumeError",
    "ResumeMismatchError", "check_platform_name", "check_deterministic_forces",
    "DETERMINISTIC_FORCES_PROPERTY", "select_platform", "langevin_integrator",
    "set_barostat", "create_context", "StopSignals", "atomic_write", "remove_stale_temporaries",
    "state_xml", "save_state_xml", "load_state_xml", "state_xml_step", "Schedule", "Origin",
    "CheckpointOrigin", "StateOrigin", "InitialOrigin", "CheckpointFiles", "Resumed",
    "StageOutcome", "ResumableStage", "frames_held", "finished_on_disk", "ParameterRamp", "production_segments",
    "iter_production_frames", "read_production_frames",
]
