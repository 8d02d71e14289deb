"""Steered MD: the starting structure of every umbrella window of one replica.

From the minimized structure of the setup stage, :class:`SteeredMD`

1. equilibrates without bias (NPT, or NVT when the pressure is 0) and saves
   the final State as ``S/replica-{R}/S-equilibration-1.xml``;
2. pulls: the bias ``k*(Q-Q0)^2`` is switched on and its centre ``Q0`` moves
   at constant velocity from the first window centre to one window spacing
   beyond the last, because Q lags behind a moving Q0; the first time Q
   crosses a window's centre, :class:`WindowStructureReporter` saves the
   structure as that window's ``S-window-{WW}.pdb``.

Both phases run on :class:`~protbench_nrp.engine.ResumableStage`, so a kill
at any instant resumes from the last checkpoint; window structures already
saved are kept. A pull that ends before Q crossed every centre fails with
:class:`PullIncompleteError`, naming the Q it reached and what to change.
"""

from __future__ import annotations

import copy
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import science
from .engine import (CheckpointFiles, EngineError, InitialOrigin, ResumableStage, Schedule,
                     StateOrigin, StopSignals, create_context, finished_on_disk,
                     langevin_integrator, remove_stale_temporaries, save_state_xml, set_barostat,
                     state_xml_step)
from .errors import ProtbenchError
from .files import atomic_write
from .layout import Campaign, SteeredFiles
from .products import LocalSizes, missing_steered
from .reporters import CVReporter, Frame, FrameReporter, ProgressRecorder, StateDataReporter, read_cv_file
from .settings import StageSettings
from .systems import SetupError, SetupFiles

#: Defaults of the pull, one per ``PROTBENCH_*`` variable of run-steered-md.py: the seed's
#: 1.2 ns at 1 fs, Q compared with the centres every 10 steps.
PULL_LENGTH_NS = science.PULL_LENGTH_NS
PULL_TIMESTEP_FS = science.PULL_TIMESTEP_FS
PULL_FRAME_PS = science.PULL_FRAME_PS
#: How far past the last centre Q0 is pulled, in Q (see :attr:`SteeredSettings.pull_end`).
PULL_OVERSHOOT = 0.1


class SteeredInputError(EngineError):
    """A setting or input of steered MD is wrong; the message names it and the fix."""


class PullIncompleteError(ProtbenchError, RuntimeError):
    """The pull ended before Q crossed every window centre."""


@dataclass(frozen=True)
class SteeredSettings(StageSettings):
    """Everything steered MD of one replica needs, checked, in explicit units.

    ``k_kcal_per_mol`` is the pulling force constant; the equilibration
    settings are those of the windows (``PROTBENCH_EQUIL_*``).
    """

    input_error = SteeredInputError

    # target, ff, replica, conditions, equilibration and platform: StageSettings
    pull_length_ns: float = PULL_LENGTH_NS
    pull_timestep_fs: float = PULL_TIMESTEP_FS
    pull_frame_ps: float = PULL_FRAME_PS

    @classmethod
    def resolve(cls, target: str, ff: str, replica: int, temperature_kelvin: float | None = None,
                pressure_atm: float | None = None, **others) -> "SteeredSettings":
        """Fill unset thermodynamic and equilibration values from the target catalog.

        Values given (from ``PROTBENCH_*`` variables) win over the catalog,
        the catalog over the defaults, exactly as for a window.

        Raises
        ------
        SteeredInputError
        """
        return cls._from_catalog(target, temperature_kelvin, pressure_atm, ff=ff, replica=replica,
                                 **others)

    def check(self) -> None:
        """Raise :class:`SteeredInputError` for the first setting that cannot work."""
        try:
            Campaign(self.target, self.ff).replica_dir(self.replica)
        except ValueError as error:
            raise SteeredInputError(f"{error} (PROTBENCH_TARGET / PROTBENCH_FF / "
                                    f"PROTBENCH_REPLICA)") from None
        if self.n_windows < 2:
            raise SteeredInputError(f"steered MD needs at least 2 windows to pull between, got "
                                    f"{self.n_windows}; set PROTBENCH_N_WINDOWS to 2 or more")
        if not (0 < self.cv_start <= 1 and 0 < self.cv_end <= 1) or self.cv_start == self.cv_end:
            raise SteeredInputError(
                f"the window centres must be distinct fractions of native contacts in (0, 1], got "
                f"{self.cv_start} -> {self.cv_end}; set PROTBENCH_CV_START and PROTBENCH_CV_END")
        self.check_conditions("pulling force constant", "PROTBENCH_STEERED_K (or PROTBENCH_UMBRELLA_K)")
        self.equilibration_schedule()
        self.pull_schedule()
        self.check_blowups()
        self.check_seed()
        self.check_platform()

    def pull_schedule(self) -> Schedule:
        return self.schedule(
            self.pull_length_ns, self.pull_timestep_fs, self.pull_frame_ps,
            checkpoint_minutes=self.checkpoint_minutes,
            names={"length": "PROTBENCH_PULL_LENGTH", "timestep": "PROTBENCH_PULL_TIMESTEP",
                   "frame": "PROTBENCH_PULL_FRAME", "minutes": "PROTBENCH_CHECKPOINT_MINUTES"})

    # -- derived -----------------------------------------------------------------
    def centres(self) -> list[float]:
        return [science.window_centre(w, self.n_windows, self.cv_start, self.cv_end)
                for w in range(self.n_windows)]

    @property
    def pull_end(self) -> float:
        """Where Q0 stops: :data:`PULL_OVERSHOOT` (at least a window spacing) past the last centre.

        Q trails a moving Q0 by roughly force / (2 k); ending the ramp on the
        last centre would leave Q short of it. Kept inside [0, 1].
        """
        spacing = (self.cv_end - self.cv_start) / (self.n_windows - 1)
        overshoot = math.copysign(max(abs(spacing), PULL_OVERSHOOT), spacing)
        return min(1.0, max(0.0, self.cv_end + overshoot))


class WindowStructureReporter(FrameReporter):
    """Saves each window's starting structure the first time Q crosses its centre.

    Crossing means reaching the centre from the side the pull starts on
    (``Q <= centre`` when Q decreases). It holds no per-frame data, so it
    never holds a resume back; structures it saved stay valid after a resume
    to an earlier checkpoint because each is a configuration the pull really
    visited.

    Parameters
    ----------
    path_of : callable
        ``path_of(window) -> Path`` of a window's PDB.
    centres : list of float
    cv_force : openmm.CustomCVForce
        The umbrella force of the Context being run (its first CV is Q).
    topology : openmm.app.Topology
    log : callable, optional
    """

    needs = frozenset({"positions"})
    name = "window structures"

    def __init__(self, path_of: Callable[[int], Path], centres: list[float], cv_force, topology,
                 log: Callable[[str], None] | None = None):
        self._path_of = path_of
        self._centres = list(centres)
        self._direction = 1.0 if centres[-1] > centres[0] else -1.0
        self._force = cv_force
        self._topology = topology
        self._log = log or (lambda line: print(line, flush=True))

    def missing(self) -> list[int]:
        """Windows whose structure is not on disk yet, in pull order."""
        return [w for w in range(len(self._centres)) if not self._path_of(w).is_file()]

    def crossed(self, q: float, centre: float) -> bool:
        return (q - centre) * self._direction >= 0.0

    def frames_on_disk(self) -> int:
        return sys.maxsize

    def truncate(self, n_frames: int) -> None:
        return None

    def open(self, n_frames: int) -> None:
        return None

    def report(self, frame: Frame) -> None:
        q = float(self._force.getCollectiveVariableValues(frame.context)[0])
        for window in self.missing():
            if not self.crossed(q, self._centres[window]):
                break
            self._write(window, q, frame)

    def _write(self, window: int, q: float, frame: Frame) -> None:
        import openmm.app as app

        state = frame.state
        if self._topology.getPeriodicBoxVectors() is not None:
            self._topology.setPeriodicBoxVectors(state.getPeriodicBoxVectors())
        text = io.StringIO()
        text.write(f"REMARK   1 WINDOW {window} CENTRE {self._centres[window]:.6f} "
                   f"Q {q:.6f} PULL STEP {frame.step}\n")
        app.PDBFile.writeFile(self._topology, state.getPositions(), text, keepIds=True)
        atomic_write(self._path_of(window), text.getvalue())
        self._log(f"window {window:02d}: Q = {q:.4f} crossed centre {self._centres[window]:.4f} "
                  f"at pull step {frame.step}")

    def flush(self, durable: bool = False) -> None:
        return None

    def close(self) -> None:
        return None


class SteeredMD:
    """Run (or resume) the steered MD of one replica under a local results root.

    Parameters
    ----------
    results_root : path-like
        The ``-o/--output_directory`` of the script.
    settings : SteeredSettings
    log : callable, optional
    """

    def __init__(self, results_root: Path | str, settings: SteeredSettings,
                 log: Callable[[str], None] | None = None):
        self.root = Path(results_root)
        self.settings = settings
        self.campaign = Campaign(settings.target, settings.ff)
        self.files: SteeredFiles = self.campaign.steered_files(settings.replica)
        self.log = log or (lambda line: print(line, flush=True))

    def path(self, relative) -> Path:
        return self.root / relative

    # -- read-only questions ------------------------------------------------------
    def window_pdb(self, window: int) -> Path:
        return self.path(self.campaign.window_pdb(self.settings.replica, window))

    @property
    def steered_state(self) -> Path:
        return self.path(self.campaign.steered_state(self.settings.replica))

    def missing_windows(self) -> list[int]:
        return [w for w in range(self.settings.n_windows) if not self.window_pdb(w).is_file()]

    def is_finished(self) -> bool:
        """Every product on disk: the equilibrated state and every window structure."""
        return steered_products_exist(self.root, self.campaign, self.settings.replica,
                                      self.settings.n_windows)

    def pull_finished_on_disk(self) -> bool:
        schedule = self.settings.pull_schedule()
        return finished_on_disk(schedule, self._pull_checkpoint(),
                                [CVReporter(self.path(self.files.cv_timeseries), None)])

    # -- running -----------------------------------------------------------------
    def run(self, stop: StopSignals | None = None) -> int:
        """Run what is left; return the exit code (``stop.exit_code`` when stopped).

        Raises
        ------
        SetupError
            When the setup stage has not finished.
        PullIncompleteError
            When the pull ended before Q crossed every centre.
        """
        if self.is_finished():
            self.log(f"steered MD of replica {self.settings.replica} is already finished; "
                     f"nothing to do")
            return 0
        setup = SetupFiles(self.root, self.campaign).load()
        directory = self.path(self.files.directory)
        directory.mkdir(parents=True, exist_ok=True)
        for folder in (directory, self.steered_state.parent):
            for stale in remove_stale_temporaries(folder):
                self.log(f"removed {stale.name}, left by a write that was killed")
        system = copy.deepcopy(setup.system)
        set_barostat(system, self.settings.temperature_kelvin, self.settings.pressure_atm)  # checks it
        if not self.steered_state.is_file():
            outcome = self._equilibrate(system, setup, stop)
            if outcome.stopped:
                return stop.exit_code
        self._forget_pull_if_windows_were_lost()
        if not self.pull_finished_on_disk():
            outcome = self._pull(system, setup.topology, stop)
            if outcome.stopped:
                return stop.exit_code
        missing = self.missing_windows()
        if missing:
            raise self._incomplete(missing)
        ProgressRecorder(self.path(self.files.progress), "pulling",
                         self.settings.pull_schedule().total_steps).finish(
            self.settings.pull_schedule().total_steps, 0.0)
        self.log(f"steered MD finished: {self.settings.n_windows} window structures saved")
        return 0

    def _forget_pull_if_windows_were_lost(self) -> None:
        """Start the pull over when a window it already passed has no structure on disk.

        That happens when a restarted pod was not given the structures saved
        before it (they are among the steered-MD Job's required files); a
        pull resumed past their crossings would never save them again.
        """
        files = self.files
        checkpoint_step = state_xml_step(self.path(files.pull_portable))
        steps, q = read_cv_file(self.path(files.cv_timeseries))
        if checkpoint_step is None or not len(q):
            return
        q = q[steps <= checkpoint_step]
        if not len(q):
            return
        centres = self.settings.centres()
        furthest = q.min() if centres[-1] < centres[0] else q.max()
        crossing = WindowStructureReporter(self.window_pdb, centres, cv_force=None, topology=None)
        lost = [w for w in self.missing_windows() if crossing.crossed(furthest, centres[w])]
        if not lost:
            return
        self.log(f"the pull already passed window(s) {', '.join(f'{w:02d}' for w in lost)} but "
                 f"their structures are missing; pulling again from the equilibrated state")
        for path in (files.pull("chk"), files.pull_portable, files.pull("out"), files.cv_timeseries):
            self.path(path).unlink(missing_ok=True)

    def _context(self, system, timestep_fs: float, friction_per_ps: float, barostat_frequency: int,
                 phase: str):
        """A Context of ``system`` with its barostat (if any) every ``barostat_frequency`` steps.

        Its integrator and barostat draw from the seeds of ``phase`` (see
        :meth:`~protbench_nrp.settings.StageSettings.seed_for`).
        """
        settings = self.settings
        if settings.pressure_atm > 0:
            system = copy.deepcopy(system)
            set_barostat(system, settings.temperature_kelvin, settings.pressure_atm, barostat_frequency,
                         settings.seed_for("steered", phase, "barostat"))
        integrator = langevin_integrator(settings.temperature_kelvin, timestep_fs, friction_per_ps,
                                         settings.seed_for("steered", phase))
        return create_context(system, integrator, settings.platform, settings.precision,
                              settings.deterministic_forces)

    def _blowup_settings(self, phase: str, timestep_variable: str, timestep_fs: float,
                         start: str) -> dict:
        """The keywords of :class:`ResumableStage` that name this phase after a blow-up."""
        return dict(name=f"steered MD (replica {self.settings.replica}) {phase}",
                    max_blowups=self.settings.max_blowups,
                    advice=f"set {timestep_variable} below its {timestep_fs:g} fs, or look at {start}")

    def _equilibrate(self, system, setup, stop):
        settings, files = self.settings, self.files
        schedule = settings.equilibration_schedule()
        context = self._context(system, settings.equil_timestep_fs, settings.equil_friction_per_ps,
                                settings.equil_barostat_frequency, "equilibration")
        stage = ResumableStage(
            context, schedule,
            CheckpointFiles(self.path(files.equilibration("chk")),
                            self.path(files.equilibration_portable)),
            [StateDataReporter(self.path(files.equilibration("out")), system)],
            ProgressRecorder(self.path(files.progress), "equilibration", schedule.total_steps),
            log=self.log, **self._blowup_settings("equilibration", "PROTBENCH_EQUIL_TIMESTEP",
                                                  settings.equil_timestep_fs,
                                                  "the minimized structure of the setup stage"))
        kind = "NPT" if settings.pressure_atm > 0 else "NVT"
        self.log(f"{kind} equilibration: {schedule.total_steps} steps of "
                 f"{settings.equil_timestep_fs} fs at {settings.temperature_kelvin} K")
        box = setup.topology.getPeriodicBoxVectors()
        stage.resume([InitialOrigin(setup.positions_nm, None if box is None else
                                    np.array([v.value_in_unit(_nm()) for v in box]),
                                    settings.temperature_kelvin, "minimized structure",
                                    settings.seed_for("steered", "velocities"))])
        context.setParameter("k", 0.0)  # the native state equilibrates unbiased
        outcome = stage.run(stop)
        if outcome.finished:
            save_state_xml(context, self.steered_state)
        return outcome

    def _pull_checkpoint(self) -> CheckpointFiles:
        return CheckpointFiles(self.path(self.files.pull("chk")), self.path(self.files.pull_portable))

    def _pull(self, system, topology, stop):
        from .contacts import find_umbrella_force
        from .engine import ParameterRamp

        settings, files = self.settings, self.files
        schedule = settings.pull_schedule()
        context = self._context(system, settings.pull_timestep_fs, settings.friction_per_ps,
                                settings.barostat_frequency, "pull")
        index, _ = find_umbrella_force(system)
        cv_force = context.getSystem().getForce(index)
        windows = WindowStructureReporter(self.window_pdb, settings.centres(), cv_force, topology,
                                          self.log)
        stage = ResumableStage(
            context, schedule, self._pull_checkpoint(),
            [StateDataReporter(self.path(files.pull("out")), system),
             CVReporter(self.path(files.cv_timeseries), cv_force), windows],
            ProgressRecorder(self.path(files.progress), "pulling", schedule.total_steps),
            controllers=[ParameterRamp("Q0", settings.cv_start, settings.pull_end,
                                       schedule.total_steps)],
            log=self.log, **self._blowup_settings("pull", "PROTBENCH_PULL_TIMESTEP",
                                                  settings.pull_timestep_fs,
                                                  f"the equilibrated state {self.steered_state}"))
        self.log(f"pulling Q0 {settings.cv_start:.4f} -> {settings.pull_end:.4f} over "
                 f"{settings.pull_length_ns} ns ({schedule.total_steps} steps of "
                 f"{settings.pull_timestep_fs} fs), k = {settings.k_kcal_per_mol} kcal/mol")
        stage.resume([StateOrigin(self.steered_state, step=0, description="equilibrated state")])
        context.setParameter("k", settings.k_kj_per_mol)
        return stage.run(stop)

    def _incomplete(self, missing: list[int]) -> PullIncompleteError:
        settings = self.settings
        _steps, q = read_cv_file(self.path(self.files.cv_timeseries))
        reached = (f"Q reached {q.min() if settings.cv_end < settings.cv_start else q.max():.4f} "
                   f"(last {q[-1]:.4f})") if len(q) else "no Q was recorded"
        first = missing[0]
        return PullIncompleteError(
            f"the pull ended before Q crossed the centre {settings.centres()[first]:.4f} of window "
            f"{first:02d} ({len(missing)} window(s) missing, the last centre is "
            f"{settings.centres()[-1]:.4f}): {reached}. Pull harder or longer "
            f"(PROTBENCH_STEERED_K, PROTBENCH_PULL_LENGTH), or end the windows nearer "
            f"(PROTBENCH_CV_END); then remove {self.path(self.files.directory)} to pull again")


def steered_products_exist(root: Path | str, campaign: Campaign, replica: int, n_windows: int) -> bool:
    """Whether a replica's steered MD left everything the windows need (reads only).

    The same test as ``stages.is_complete`` for the steered Job
    (:func:`protbench_nrp.products.missing_steered`): no output absent or empty.
    """
    return not missing_steered(LocalSizes(root), campaign, replica, n_windows)


def _nm():
    import openmm.unit as unit

    return unit.nanometer


__all__ = ["SteeredSettings", "SteeredMD", "WindowStructureReporter", "SteeredInputError",
           "PullIncompleteError", "SetupError", "PULL_LENGTH_NS", "PULL_TIMESTEP_FS",
           "PULL_FRAME_PS",
           "steered_products_exist"]
