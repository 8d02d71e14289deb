"""One umbrella window: equilibration with the bias on, then production.

:class:`WindowSettings` gathers and checks the configuration (every value
with its unit in its name); :class:`UmbrellaWindow` checks the inputs, then
runs both stages on :class:`~protbench_nrp.engine.ResumableStage`, so a
window killed at any instant resumes where it stopped, on any platform.
Nothing is written before settings and inputs have been checked.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import science
from .contacts import CV_NAME, MissingUmbrellaForceError, find_umbrella_force
from .engine import (CheckpointFiles, EngineError, InitialOrigin, ResumableStage, Schedule,
                     StateOrigin, StopSignals, create_context, finished_on_disk, langevin_integrator,
                     load_state_xml, remove_stale_temporaries, save_state_xml, set_barostat)
from .layout import Campaign, WindowFiles
from .records import Progress, UmbrellaParameters
from .reporters import (CVReporter, ProgressRecorder, SegmentedDCDReporter, StateDataReporter)
from .settings import StageSettings

#: The stage that writes each input, named in errors about a missing input.
PRODUCERS = {
    "system": "umbrella-scripts/setup-umbrella-system.py",
    "steered": "umbrella-scripts/run-steered-md.py",
}

#: Fields of the parameters record that must not change once a window has started.
_FIXED_ON_RESUME = ("target", "ff", "replica", "window", "n_windows", "cv_name", "centre",
                    "k_kcal_per_mol", "temperature_kelvin", "pressure_atm", "timestep_fs",
                    "frame_ps", "equil_length_ns", "friction_per_ps",
                    # The checkpoint interval sets the production DCD segment size: another one
                    # would find the segments short and restart production from step 0.
                    "checkpoint_ps")


class WindowInputError(EngineError):
    """A setting or input of a window is wrong; the message names it and the fix."""


@dataclass(frozen=True)
class WindowSettings(StageSettings):
    """Everything a window needs to know, checked, in explicit units."""

    input_error = WindowInputError

    # target, ff, replica, conditions, equilibration and platform: StageSettings
    window: int
    production_length_ns: float = science.PRODUCTION_LENGTH_NS
    timestep_fs: float = science.TIMESTEP_FS
    frame_ps: float = science.FRAME_PS
    checkpoint_ps: float = science.CHECKPOINT_PS
    save_state_ps: float = science.SAVE_STATE_PS

    @classmethod
    def resolve(cls, target: str, ff: str, replica: int, window: int,
                temperature_kelvin: float | None = None, pressure_atm: float | None = None,
                **others) -> "WindowSettings":
        """Fill unset thermodynamic and equilibration values from the target catalog.

        Values given here (from ``PROTBENCH_*`` variables) win over the
        catalog; the catalog wins over the defaults. The fields so filled are
        :attr:`~protbench_nrp.settings.StageSettings.CATALOG_FIELDS`. A target unknown to every
        catalog is accepted only when temperature and pressure are both given.

        Raises
        ------
        WindowInputError
        """
        return cls._from_catalog(target, temperature_kelvin, pressure_atm, ff=ff, replica=replica,
                                 window=window, **others)

    # -- checks ------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`WindowInputError` for the first setting that cannot work."""
        try:
            Campaign(self.target, self.ff)
        except ValueError as error:
            raise WindowInputError(f"{error} (PROTBENCH_TARGET / PROTBENCH_FF)") from None
        if self.replica < 1:
            raise WindowInputError(f"replica {self.replica} is invalid: replicas are numbered from "
                                   f"1; set PROTBENCH_REPLICA to 1 or more")
        if self.window < 0:
            raise WindowInputError(f"window {self.window} is negative; set PROTBENCH_WINDOW to "
                                   f"0..{self.n_windows - 1}")
        try:
            science.window_centre(self.window, self.n_windows, self.cv_start, self.cv_end)
        except ValueError as error:
            raise WindowInputError(str(error)) from None
        self.check_conditions("force constant", "PROTBENCH_UMBRELLA_K")
        self.equilibration_schedule()
        self.production_schedule()
        self.check_blowups()
        self.check_seed()
        self.check_platform()

    def production_schedule(self) -> Schedule:
        return self.schedule(
            self.production_length_ns, self.timestep_fs, self.frame_ps,
            checkpoint_ps=self.checkpoint_ps, save_state_ps=self.save_state_ps,
            checkpoint_minutes=self.checkpoint_minutes,
            names={"length": "PROTBENCH_PRODUCTION_LENGTH", "timestep": "PROTBENCH_TIMESTEP",
                   "frame": "PROTBENCH_FRAME", "checkpoint": "PROTBENCH_CHECKPOINT",
                   "save_state": "PROTBENCH_SAVE_STATE", "minutes": "PROTBENCH_CHECKPOINT_MINUTES"})

    # -- derived ---------------------------------------------------------------
    @property
    def centre(self) -> float:
        return science.window_centre(self.window, self.n_windows, self.cv_start, self.cv_end)

    def parameters(self) -> UmbrellaParameters:
        return UmbrellaParameters(
            target=self.target, ff=self.ff, replica=self.replica, window=self.window,
            n_windows=self.n_windows, cv_name=CV_NAME, centre=self.centre,
            k_kcal_per_mol=self.k_kcal_per_mol, temperature_kelvin=self.temperature_kelvin,
            pressure_atm=self.pressure_atm, timestep_fs=self.timestep_fs, frame_ps=self.frame_ps,
            production_length_ns=self.production_length_ns, equil_length_ns=self.equil_length_ns,
            checkpoint_ps=self.checkpoint_ps, friction_per_ps=self.friction_per_ps)


@dataclass
class WindowInputs:
    """The checked inputs of a window."""

    system: object
    topology: object
    positions_nm: object
    box_vectors_nm: object
    umbrella_index: int


class UmbrellaWindow:
    """Run (or resume) one umbrella window under a local results root.

    Parameters
    ----------
    results_root : path-like
        The ``-o/--output_directory`` of the script.
    settings : WindowSettings
    log : callable, optional
    """

    def __init__(self, results_root: Path | str, settings: WindowSettings,
                 log: Callable[[str], None] | None = None):
        self.root = Path(results_root)
        self.settings = settings
        self.files: WindowFiles = Campaign(settings.target, settings.ff).window_files(
            settings.replica, settings.window)
        self.log = log or (lambda line: print(line, flush=True))

    def path(self, relative) -> Path:
        return self.root / relative

    # -- read-only questions ------------------------------------------------------
    def is_finished(self) -> bool:
        """Whether production is complete on disk; reads only, needs no Context."""
        return finished_on_disk(self.settings.production_schedule(), self._production_checkpoint(),
                                self._production_reporters(topology=None, system=None, cv_force=None))

    def read_inputs(self) -> WindowInputs:
        """Load and check the system, window structure and steered state.

        Raises
        ------
        WindowInputError
            Naming the file at fault and the stage that produces it.
        """
        import openmm
        import openmm.app as app
        import openmm.unit as unit

        files = self.files
        system_path = self._input(files.system_xml, "system")
        pdb_path = self._input(files.start_pdb, "steered")
        steered_path = self._input(files.steered_state, "steered")
        try:
            system = openmm.XmlSerializer.deserialize(system_path.read_text())
        except Exception as error:
            raise WindowInputError(f"{system_path} is not a serialized OpenMM System ({error}); "
                                   f"rerun {PRODUCERS['system']}") from None
        if not isinstance(system, openmm.System):
            raise WindowInputError(f"{system_path} holds a {type(system).__name__}, not a System; "
                                   f"rerun {PRODUCERS['system']}")
        try:
            index, _force = find_umbrella_force(system)
        except MissingUmbrellaForceError as error:
            raise WindowInputError(f"{system_path}: {error}") from None
        try:
            pdb = app.PDBFile(str(pdb_path))
        except Exception as error:
            raise WindowInputError(f"{pdb_path} is not a readable PDB file ({error}); rerun "
                                   f"{PRODUCERS['steered']}") from None
        if pdb.topology.getNumAtoms() != system.getNumParticles():
            raise WindowInputError(
                f"{pdb_path} has {pdb.topology.getNumAtoms()} atoms but {system_path} has "
                f"{system.getNumParticles()} particles: they come from different systems; rerun "
                f"{PRODUCERS['steered']} after {PRODUCERS['system']}")
        try:
            # Checked though no longer read here: it is the steered stage's proof of a finished
            # equilibration, and a window Job's input (layout's stage table).
            load_state_xml(steered_path)
        except ValueError as error:
            raise WindowInputError(f"{error}; rerun {PRODUCERS['steered']}") from None
        positions = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        system = copy.deepcopy(system)
        try:
            set_barostat(system, self.settings.temperature_kelvin, self.settings.pressure_atm)
        except EngineError as error:
            raise WindowInputError(f"{system_path}: {error}") from None
        topology = pdb.topology
        box = None
        if system.usesPeriodicBoundaryConditions():
            # The box of the pull frame the structure was taken from (its CRYST1 record): with
            # a barostat the pull changed the box, and these positions fit only that one.
            frame_box = topology.getPeriodicBoxVectors()
            if frame_box is None:
                raise WindowInputError(
                    f"{pdb_path} has no periodic box (CRYST1 record) but {system_path} is "
                    f"periodic: the window cannot know the box its structure was taken in; rerun "
                    f"{PRODUCERS['steered']}")
            box = np.array([v.value_in_unit(unit.nanometer) for v in frame_box])
        else:
            topology.setPeriodicBoxVectors(None)
        return WindowInputs(system, topology, positions, box, index)

    def _input(self, relative, producer: str) -> Path:
        path = self.path(relative)
        if not path.is_file() or path.stat().st_size == 0:
            state = "is empty" if path.is_file() else "is missing"
            raise WindowInputError(f"input {path} {state}; it is written by "
                                   f"{PRODUCERS[producer]}: run that stage first")
        return path

    # -- running ---------------------------------------------------------------
    def run(self, stop: StopSignals | None = None) -> int:
        """Run what is left of the window; return the process exit code.

        0 when production is complete (at once, touching nothing, if it
        already was); ``stop.exit_code`` when a signal stopped it.
        """
        if self.is_finished():
            self.log(f"window {self.files.directory} is already finished; nothing to do")
            self._record_finished_if_lost()
            return 0
        inputs = self.read_inputs()
        self.check_recorded_parameters()
        directory = self.path(self.files.directory)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(directory):
            self.log(f"removed {stale.name}, left by a write that was killed")
        self.settings.parameters().write(self.path(self.files.parameters))

        if not self._equilibrated():
            outcome = self._equilibrate(inputs, stop)
            if outcome.stopped:
                return stop.exit_code
        outcome = self._produce(inputs, stop)
        if outcome.stopped:
            return stop.exit_code
        self._progress_recorder("production", outcome.recoveries).finish(outcome.step, outcome.ns_per_day)
        self.log(f"production finished at step {outcome.step}")
        return 0

    def _record_finished_if_lost(self) -> None:
        # A kill between the final checkpoint and the "finished" progress record
        # would otherwise leave status tools believing the window stalled forever.
        path = self.path(self.files.progress)
        try:
            if Progress.read(path).phase == "finished":
                return
        except (OSError, ValueError):
            pass
        recorder = self._progress_recorder("production")
        recorder.finish(recorder.total_steps, 0.0)
        self.log("restored the progress record of the finished window")

    def check_recorded_parameters(self) -> None:
        """Refuse to continue a started window with another umbrella, temperature, timestep...

        Raises
        ------
        WindowInputError
            Listing what changed since the parameters record was written.
        """
        path = self.path(self.files.parameters)
        try:
            recorded = UmbrellaParameters.read(path)
        except FileNotFoundError:
            return
        except (ValueError, TypeError):
            return  # unreadable: it is rewritten from the settings
        wanted = self.settings.parameters()
        changed = [f"{name}: {getattr(recorded, name)!r} -> {getattr(wanted, name)!r}"
                   for name in _FIXED_ON_RESUME
                   if _differs(getattr(recorded, name), getattr(wanted, name))]
        if changed:
            raise WindowInputError(
                f"this window started with other settings ({'; '.join(changed)}), recorded in "
                f"{path}; restore the PROTBENCH_* values it started with, or move "
                f"{self.path(self.files.directory)} away to start it afresh")

    def _equilibrated(self) -> bool:
        path = self.path(self.files.equilibrated_state)
        if not path.exists():
            return False
        try:
            load_state_xml(path)
        except (ValueError, OSError):
            self.log(f"{path.name} is unreadable; equilibrating again")
            path.unlink()
            return False
        return True

    def new_context(self, inputs: WindowInputs, timestep_fs: float, friction_per_ps: float | None = None,
                    barostat_frequency: int | None = None, phase: str = "production"):
        """A Context of the window's System on its platform; returns ``(context, integrator)``.

        The System gets a barostat every ``barostat_frequency`` steps (when
        the pressure is not 0) in this Context only. Friction and barostat
        interval default to production's; integrator and barostat draw from
        the seeds of this window's ``phase``.
        """
        settings = self.settings
        friction_per_ps = settings.friction_per_ps if friction_per_ps is None else friction_per_ps
        barostat_frequency = (settings.barostat_frequency if barostat_frequency is None
                              else barostat_frequency)
        integrator = langevin_integrator(settings.temperature_kelvin, timestep_fs, friction_per_ps,
                                         settings.seed_for("window", settings.window, phase))
        system = inputs.system
        if settings.pressure_atm > 0:
            system = copy.deepcopy(system)
            set_barostat(system, settings.temperature_kelvin, settings.pressure_atm,
                         barostat_frequency,
                         settings.seed_for("window", settings.window, phase, "barostat"))
        context = create_context(system, integrator, settings.platform, settings.precision,
                                 settings.deterministic_forces)
        return context, integrator

    def equilibration_stage(self, inputs: WindowInputs):
        """The equilibration stage, bias on, and its fresh-start fallback.

        Returns
        -------
        stage : ResumableStage
        fallbacks : list of Origin
            Pass to ``stage.resume``; then call :meth:`apply_bias` before ``stage.run``.
        """
        files, settings = self.files, self.settings
        schedule = settings.equilibration_schedule()
        # A portable twin beside the checkpoint: a pod on another GPU model resumes it too.
        stage = self._stage(inputs, "equilibration", schedule,
                            (settings.equil_timestep_fs, settings.equil_friction_per_ps,
                             settings.equil_barostat_frequency),
                            CheckpointFiles(self.path(files.equilibration("chk")),
                                            self.path(files.equilibration_portable)),
                            lambda _context: self._equilibration_reporters(inputs, schedule),
                            "PROTBENCH_EQUIL_TIMESTEP", settings.equil_timestep_fs)
        fallbacks = [InitialOrigin(inputs.positions_nm, inputs.box_vectors_nm,
                                   settings.temperature_kelvin, "window structure",
                                   settings.seed_for("window", settings.window, "velocities"))]
        return stage, fallbacks

    def production_stage(self, inputs: WindowInputs):
        """The production stage and its fallback, the equilibrated state at step 0.

        Returns ``(stage, fallbacks)``, to use as those of :meth:`equilibration_stage`.
        """
        settings = self.settings
        stage = self._stage(inputs, "production", settings.production_schedule(),
                            (settings.timestep_fs, settings.friction_per_ps, settings.barostat_frequency),
                            self._production_checkpoint(),
                            lambda context: self._production_reporters(
                                inputs.topology, inputs.system,
                                context.getSystem().getForce(inputs.umbrella_index)),
                            "PROTBENCH_TIMESTEP", settings.timestep_fs)
        fallbacks = [StateOrigin(self.path(self.files.equilibrated_state), step=0,
                                 description="equilibrated state")]
        return stage, fallbacks

    def _stage(self, inputs: WindowInputs, phase: str, schedule: Schedule, dynamics: tuple,
               checkpoint: CheckpointFiles, reporters: Callable[[object], list],
               timestep_variable: str, timestep_fs: float) -> ResumableStage:
        """A stage on a new Context; ``reporters(context)`` makes its reporters.

        ``dynamics`` is ``(timestep_fs, friction_per_ps, barostat_frequency)``;
        ``timestep_variable`` is named in the advice of a blow-up.

        The reporters get the Context because production reads Q through the
        umbrella force of the Context's System, which exists only once it does.
        """
        context, _ = self.new_context(inputs, *dynamics, phase=phase)
        settings = self.settings
        return ResumableStage(
            context, schedule, checkpoint, reporters(context), self._progress_recorder(phase),
            log=self.log, name=f"window {settings.window:02d} (replica {settings.replica}) {phase}",
            max_blowups=settings.max_blowups,
            advice=(f"set {timestep_variable} below its {timestep_fs:g} fs, or look at the "
                    f"window's starting structure {self.path(self.files.start_pdb)}"))

    def _progress_recorder(self, phase: str, recoveries: int = 0) -> ProgressRecorder:
        """The recorder of ``phase``, stamping each record with the timestep and frame it runs with."""
        settings = self.settings
        production = settings.production_schedule()
        if phase == "equilibration":
            schedule, timestep_fs, after = settings.equilibration_schedule(), settings.equil_timestep_fs, production
        else:
            schedule, timestep_fs, after = production, settings.timestep_fs, None
        return ProgressRecorder(self.path(self.files.progress), phase, schedule.total_steps, recoveries,
                                timestep_fs=timestep_fs, frame_ps=schedule.frame_steps * timestep_fs / 1000.0,
                                steps_after_phase=after.total_steps if after else 0)

    def apply_bias(self, context) -> None:
        """Set the umbrella's ``k`` (kJ/mol) and ``Q0`` of this window in ``context``."""
        context.setParameter("k", self.settings.k_kj_per_mol)
        context.setParameter("Q0", self.settings.centre)

    def _equilibrate(self, inputs: WindowInputs, stop):
        settings = self.settings
        stage, fallbacks = self.equilibration_stage(inputs)
        self.log(f"equilibration: {stage.schedule.total_steps} steps of {settings.equil_timestep_fs} "
                 f"fs at Q0 = {settings.centre:.4f}")
        stage.resume(fallbacks)
        self.apply_bias(stage.context)
        outcome = stage.run(stop)
        if outcome.finished:
            save_state_xml(stage.context, self.path(self.files.equilibrated_state))
        return outcome

    def _produce(self, inputs: WindowInputs, stop):
        stage, fallbacks = self.production_stage(inputs)
        self.log(f"production: {stage.schedule.total_steps} steps of {self.settings.timestep_fs} fs, "
                 f"{stage.schedule.total_frames} frames")
        stage.resume(fallbacks)
        self.apply_bias(stage.context)
        return stage.run(stop)

    def _equilibration_reporters(self, inputs: WindowInputs, schedule: Schedule) -> list:
        files, settings = self.files, self.settings
        return [
            SegmentedDCDReporter(lambda _k: self.path(files.equilibration("dcd")), inputs.topology,
                                 schedule.frame_steps, settings.equil_timestep_fs / 1000.0),
            StateDataReporter(self.path(files.equilibration("out")), inputs.system),
        ]

    def _production_checkpoint(self) -> CheckpointFiles:
        files = self.files
        return CheckpointFiles(self.path(files.production("chk")), self.path(files.portable_checkpoint),
                               lambda n: self.path(files.saved_state(n)))

    def _production_reporters(self, topology, system, cv_force) -> list:
        files, settings = self.files, self.settings
        schedule = settings.production_schedule()
        return [
            SegmentedDCDReporter(lambda k: self.path(files.production_segment(k)), topology,
                                 schedule.frame_steps, settings.timestep_fs / 1000.0,
                                 frames_per_segment=schedule.checkpoint_frames,
                                 stray_glob=files.production_segment_glob),
            StateDataReporter(self.path(files.production("out")), system),
            CVReporter(self.path(files.cv_timeseries), cv_force),
        ]


def _differs(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return not math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a != b


__all__ = ["WindowSettings", "WindowInputs", "UmbrellaWindow", "WindowInputError", "PRODUCERS"]
