"""What the settings of steered MD and of an umbrella window have in common.

Both stages run at the target's temperature and pressure, equilibrate with
the ``PROTBENCH_EQUIL_*`` values and run on the platform the pod has, so
those settings are filled in, checked and their errors worded here, once.
Each stage keeps its own error class (:attr:`StageSettings.input_error`):
callers and tests tell a steered-MD setting from a window's by it.
"""

from __future__ import annotations

import math
from typing import ClassVar

from . import science
from .engine import EngineError, Schedule, select_platform


class StageSettings:
    """Base of the frozen settings dataclasses of the stages.

    A subclass has the fields ``target``, ``k_kcal_per_mol``,
    ``temperature_kelvin``, ``pressure_atm``, ``equil_length_ns``,
    ``equil_timestep_fs``, ``equil_frame_ps``, ``checkpoint_minutes``,
    ``platform`` and ``precision``, and sets :attr:`input_error`.
    """

    #: Raised, with the variable to change in its message, for a setting that cannot work.
    input_error: ClassVar[type[EngineError]] = EngineError

    @classmethod
    def _from_catalog(cls, target: str, temperature_kelvin: float | None,
                      pressure_atm: float | None, equil_length_ns: float | None,
                      equil_frame_ps: float | None, **fields):
        """Each stage's ``resolve``: fill unset values from the target catalog, build, check.

        Raises
        ------
        input_error
        """
        try:
            conditions = science.target_conditions(target)
        except science.UnknownTargetError as error:
            if temperature_kelvin is None or pressure_atm is None:
                raise cls.input_error(
                    f"{error}; or set both PROTBENCH_TEMPERATURE and PROTBENCH_PRESSURE") from None
            conditions = None
        if conditions is not None:
            temperature_kelvin = conditions.temperature_kelvin if temperature_kelvin is None else temperature_kelvin
            pressure_atm = conditions.pressure_atm if pressure_atm is None else pressure_atm
            equil_length_ns = conditions.equil_length_ns if equil_length_ns is None else equil_length_ns
            equil_frame_ps = conditions.equil_frame_ps if equil_frame_ps is None else equil_frame_ps
        # Left out when still unset, so the dataclass default applies.
        for name, value in (("equil_length_ns", equil_length_ns), ("equil_frame_ps", equil_frame_ps)):
            if value is not None:
                fields[name] = value
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

    def check_platform(self) -> None:
        """Raise :attr:`input_error` when this machine has no such platform or precision."""
        try:
            select_platform(self.platform, self.precision)
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


__all__ = ["StageSettings"]
