"""What the settings of steered MD and of an umbrella window have in common.

Both stages run at the target's temperature and pressure, equilibrate with
the ``PROTBENCH_EQUIL_*`` values and run on the platform the pod has, so
those settings are filled in, checked and their errors worded here, once.
Each stage keeps its own error class (:attr:`StageSettings.input_error`):
callers and tests tell a steered-MD setting from a window's by it. The fields
both stages have are declared here, once; a stage adds only its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar, Iterator

from . import science
from .engine import (MAX_SEED, EngineError, Schedule, check_deterministic_forces, check_platform_name,
                     derive_seed, select_platform)

#: False while the launcher checks a Job's settings: its machine need not have the pod's platform.
_CHECK_AVAILABILITY = contextvars.ContextVar("check_platform_availability", default=True)


@contextlib.contextmanager
def platform_availability(check: bool) -> Iterator[None]:
    """Within it, :meth:`StageSettings.check_platform` checks the names only unless ``check``."""
    token = _CHECK_AVAILABILITY.set(check)
    try:
        yield
    finally:
        _CHECK_AVAILABILITY.reset(token)


@dataclass(frozen=True)
class StageSettings:
    """Base of the frozen settings dataclasses of the stages: the fields they share.

    ``target``, ``ff`` and ``replica`` may be given by position; the shared
    fields after them by keyword only, so that a stage's own fields (a
    window's ``window``) follow ``replica``. A subclass sets
    :attr:`input_error`. Equilibration uses the ``equil_*`` friction and
    barostat interval, production and pulling the others (as the seed does).
    """

    target: str
    ff: str
    replica: int
    _: KW_ONLY
    n_windows: int = science.N_WINDOWS
    cv_start: float = science.CV_START
    cv_end: float = science.CV_END
    k_kcal_per_mol: float = science.UMBRELLA_K_KCAL_PER_MOL
    temperature_kelvin: float = 300.0
    pressure_atm: float = 0.0
    equil_length_ns: float = science.EQUIL_LENGTH_NS
    equil_timestep_fs: float = science.EQUIL_TIMESTEP_FS
    equil_frame_ps: float = science.EQUIL_FRAME_PS
    equil_friction_per_ps: float = science.EQUIL_FRICTION_PER_PS
    equil_barostat_frequency: int = science.EQUIL_BAROSTAT_FREQUENCY
    friction_per_ps: float = science.FRICTION_PER_PS
    barostat_frequency: int = science.BAROSTAT_FREQUENCY
    checkpoint_minutes: float = science.CHECKPOINT_MINUTES
    platform: str = science.PLATFORM
    precision: str = science.PRECISION
    deterministic_forces: bool = False
    max_blowups: int = science.MAX_BLOWUPS
    #: Seed of every random number of the stage (0: new random ones each run); see :meth:`seed_for`.
    seed: int = 0

    #: Raised, with the variable to change in its message, for a setting that cannot work.
    input_error: ClassVar[type[EngineError]] = EngineError

    #: Fields that, left unset (``None``), take the target's catalog value, else the default.
    CATALOG_FIELDS: ClassVar[tuple[str, ...]] = (
        "equil_length_ns", "equil_frame_ps", "equil_timestep_fs", "equil_friction_per_ps",
        "equil_barostat_frequency", "friction_per_ps", "barostat_frequency")

    @classmethod
    def _from_catalog(cls, target: str, temperature_kelvin: float | None,
                      pressure_atm: float | None, **fields):
        """Each stage's ``resolve``: fill unset values from the target catalog, build, check.

        Raises
        ------
        input_error
        """
        try:
            conditions = science.target_conditions(target, fields.get("ff"))
        except science.ProteinbenchmarkImportError as error:
            raise cls.input_error(str(error)) from None
        except science.UnknownTargetError as error:
            if temperature_kelvin is None or pressure_atm is None:
                raise cls.input_error(
                    f"{error}; or set both PROTBENCH_TEMPERATURE and PROTBENCH_PRESSURE") from None
            conditions = None
        if conditions is not None:
            temperature_kelvin = conditions.temperature_kelvin if temperature_kelvin is None else temperature_kelvin
            pressure_atm = conditions.pressure_atm if pressure_atm is None else pressure_atm
            for name in cls.CATALOG_FIELDS:
                if fields.get(name) is None:
                    fields[name] = getattr(conditions, name)
        # Left out when still unset, so the dataclass default applies.
        fields = {name: value for name, value in fields.items()
                  if not (name in cls.CATALOG_FIELDS and value is None)}
        settings = cls(target=target, temperature_kelvin=temperature_kelvin,
                       pressure_atm=pressure_atm, **fields)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise :attr:`input_error` for the first setting that cannot work."""
        raise NotImplementedError

    # -- checks shared by the stages ---------------------------------------------
    def check_conditions(self, force_constant: str, variable: str) -> None:
        """Raise :attr:`input_error` for a temperature, force constant or pressure that cannot work.

        Parameters
        ----------
        force_constant : str
            What the stage calls ``k_kcal_per_mol`` in the message.
        variable : str
            The variable(s) that set it, named in the message.
        """
        for name, value, setting in (
                ("temperature", self.temperature_kelvin, "PROTBENCH_TEMPERATURE"),
                (force_constant, self.k_kcal_per_mol, variable)):
            if not (math.isfinite(value) and value > 0):
                raise self.input_error(f"{name} {value} must be a positive number; set {setting}")
        if not (math.isfinite(self.pressure_atm) and self.pressure_atm >= 0):
            raise self.input_error(f"pressure {self.pressure_atm} atm must be >= 0 (0 = no "
                                   f"barostat); set PROTBENCH_PRESSURE")
        # Set only by the target's catalog entry (or the science defaults).
        where = (f"fix the entry of {self.target!r} in proteinbenchmark's benchmark_targets "
                 f"(or science.py's defaults)")
        for name in ("equil_friction_per_ps", "friction_per_ps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise self.input_error(f"Langevin friction {name} = {value} must be > 0; {where}")
        for name in ("equil_barostat_frequency", "barostat_frequency"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise self.input_error(f"barostat interval {name} = {value} must be a whole number "
                                       f"of steps >= 1; {where}")

    def check_blowups(self) -> None:
        """Raise :attr:`input_error` unless ``max_blowups`` is a whole number >= 0."""
        value = self.max_blowups
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise self.input_error(f"max_blowups {value} must be a whole number >= 0 (recovery "
                                   f"attempts after a blow-up); set PROTBENCH_MAX_BLOWUPS")

    def check_seed(self) -> None:
        """Raise :attr:`input_error` unless ``seed`` is a whole number in ``0 .. MAX_SEED``."""
        value = self.seed
        if isinstance(value, bool) or int(value) != value or not 0 <= value <= MAX_SEED:
            raise self.input_error(f"seed {value} must be a whole number from 0 to {MAX_SEED} "
                                   f"(0 = a new random seed each run); set PROTBENCH_SEED")

    def seed_for(self, *phase) -> int:
        """The seed of one phase of this replica (0 when ``seed`` is 0: random).

        Each stage names its phase (``"steered", "pull"``; ``"window", 3,
        "production"``); target, force field and replica are added here, so
        no two streams of a campaign are the same.
        """
        return derive_seed(self.seed, self.target, self.ff, self.replica, *phase)

    def check_platform(self) -> None:
        """Raise :attr:`input_error` for an unknown platform or precision, one this machine lacks, or
        deterministic forces asked of a platform without them.

        Inside :func:`platform_availability(False) <platform_availability>`, the names only.
        """
        try:
            if _CHECK_AVAILABILITY.get():
                select_platform(self.platform, self.precision, self.deterministic_forces)
            else:
                check_platform_name(self.platform, self.precision)
                check_deterministic_forces(self.platform, self.deterministic_forces)
        except EngineError as error:
            raise self.input_error(str(error)) from None

    def equilibration_schedule(self) -> Schedule:
        return self.schedule(
            self.equil_length_ns, self.equil_timestep_fs, self.equil_frame_ps,
            checkpoint_minutes=self.checkpoint_minutes,
            names={"length": "PROTBENCH_EQUIL_LENGTH", "timestep": "PROTBENCH_EQUIL_TIMESTEP",
                   "frame": "PROTBENCH_EQUIL_FRAME", "minutes": "PROTBENCH_CHECKPOINT_MINUTES"})

    def schedule(self, length_ns: float, timestep_fs: float, frame_ps: float, **options) -> Schedule:
        """:meth:`Schedule.from_times <protbench_nrp.engine.Schedule.from_times>`, raising :attr:`input_error`."""
        try:
            return Schedule.from_times(length_ns, timestep_fs, frame_ps, **options)
        except EngineError as error:
            raise self.input_error(str(error)) from None

    # -- derived -----------------------------------------------------------------
    @property
    def k_kj_per_mol(self) -> float:
        return self.k_kcal_per_mol * science.KJ_PER_KCAL


__all__ = ["StageSettings", "platform_availability"]
