"""The seed's science defaults, the umbrella window centres and the target catalog.

Units are part of every name here (``_ns``, ``_ps``, ``_fs``, ``_kelvin``,
``_atm``, ``_kcal_per_mol``) because these numbers cross process boundaries as
plain environment variables.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ProtbenchError

KJ_PER_KCAL = 4.184
#: Molar gas (Boltzmann) constant R = N_A k_B, as OpenMM's ``unit.MOLAR_GAS_CONSTANT_R``.
MOLAR_GAS_CONSTANT_KJ_PER_MOL_K = 8.31446261815324e-3
MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K = MOLAR_GAS_CONSTANT_KJ_PER_MOL_K / KJ_PER_KCAL

#: Defaults of the umbrella window script, one per ``PROTBENCH_*`` variable.
N_WINDOWS = 31
CV_START = 1.0
CV_END = 0.4
UMBRELLA_K_KCAL_PER_MOL = 5000.0
EQUIL_LENGTH_NS = 1.0
EQUIL_TIMESTEP_FS = 1.0
EQUIL_FRAME_PS = 10.0
PRODUCTION_LENGTH_NS = 500.0
TIMESTEP_FS = 4.0
FRAME_PS = 100.0
CHECKPOINT_PS = 10_000.0
SAVE_STATE_PS = 100_000.0
#: Langevin friction and Monte Carlo barostat interval (steps) of the seed
#: (proteinbenchmark): equilibration, then production and pulling. A target's
#: catalog entry may override each (see :class:`TargetConditions`).
EQUIL_FRICTION_PER_PS = 5.0
EQUIL_BAROSTAT_FREQUENCY = 5
FRICTION_PER_PS = 1.0
BAROSTAT_FREQUENCY = 25
#: Defaults of steered MD (the seed pulls for 1.2 ns at 1 fs, checking Q every 10 steps).
PULL_LENGTH_NS = 1.2
PULL_TIMESTEP_FS = 1.0
PULL_FRAME_PS = 0.01
CHECKPOINT_MINUTES = 15.0
#: Recovery attempts from one good state after a blow-up before a stage gives up (exit 65).
MAX_BLOWUPS = 3
#: Largest seed OpenMM accepts (a C int); a seed of 0 asks for new random numbers each run.
MAX_SEED = 2**31 - 1
PLATFORM = "CUDA"
PRECISION = "mixed"
PLATFORMS = ("CUDA", "OpenCL", "CPU", "Reference")


def window_centre(window: int, n_windows: int = N_WINDOWS,
                  cv_start: float = CV_START, cv_end: float = CV_END) -> float:
    """Centre Q0 of a window: ``n_windows`` centres evenly spaced, both ends included."""
    if n_windows < 1:
        raise ValueError(f"the number of windows must be >= 1, got {n_windows}")
    if not 0 <= window < n_windows:
        raise ValueError(
            f"window {window} is outside 0..{n_windows - 1} for {n_windows} windows; "
            f"set PROTBENCH_WINDOW below PROTBENCH_N_WINDOWS"
        )
    if n_windows == 1:
        return float(cv_start)
    return cv_start + (cv_end - cv_start) * window / (n_windows - 1)


@dataclass(frozen=True)
class TargetConditions:
    """Thermodynamic state and equilibration settings of a benchmark target.

    ``pressure_atm`` of 0 means no barostat (vacuum or implicit solvent).
    The other fields are the catalog's optional per-target overrides; ``None``
    keeps the script's defaults.
    """

    name: str
    temperature_kelvin: float
    pressure_atm: float
    equil_length_ns: float | None = None
    equil_frame_ps: float | None = None
    equil_timestep_fs: float | None = None
    equil_friction_per_ps: float | None = None
    equil_barostat_frequency: int | None = None
    friction_per_ps: float | None = None
    barostat_frequency: int | None = None
    source: str = "proteinbenchmark-nrp"


#: Targets known without proteinbenchmark. ``villin`` is the bundled local
#: target (OpenMM's ``test.pdb``; vacuum or implicit solvent here, and see
#: :data:`LOCAL_FORCE_FIELD_CONDITIONS` for its water box); ``gb3`` carries the thermodynamic
#: state of proteinbenchmark's catalog so the seed's default target works in
#: a pod even before proteinbenchmark is importable.
LOCAL_TARGETS = {
    "villin": TargetConditions("villin", 300.0, 0.0),
    "gb3": TargetConditions("gb3", 298.0, 1.0),
}


#: Conditions of a local target with one of its force fields, where they differ from
#: :data:`LOCAL_TARGETS`: villin in TIP3P water (periodic, PME) runs at 1 atm, with the
#: barostat of the stage settings.
LOCAL_FORCE_FIELD_CONDITIONS = {
    ("villin", "amber14-tip3p"): TargetConditions("villin", 300.0, 1.0),
}


class UnknownTargetError(ProtbenchError, LookupError):
    """Raised for a target known neither to proteinbenchmark nor to this project."""


def _magnitude(quantity, unit_name: str) -> float:
    """Plain number of an OpenMM or OpenFF (pint) quantity in the named unit."""
    if hasattr(quantity, "m_as"):  # openff.units
        return float(quantity.m_as(unit_name))
    from openmm import unit

    return float(quantity.value_in_unit(getattr(unit, unit_name)))


def _rate(quantity) -> float | None:
    """A friction (OpenMM or OpenFF quantity, or plain number) in 1/ps; ``None`` stays ``None``."""
    if quantity is None:
        return None
    if hasattr(quantity, "m_as"):  # openff.units
        return float(quantity.m_as("1/picosecond"))
    if hasattr(quantity, "value_in_unit"):
        from openmm import unit

        return float(quantity.value_in_unit(unit.picosecond ** -1))
    return float(quantity)


class ProteinbenchmarkImportError(ProtbenchError, RuntimeError):
    """proteinbenchmark is installed but importing it fails (a broken dependency, a bad install)."""


def import_proteinbenchmark():
    """The ``proteinbenchmark`` module, or ``None`` when it is not installed here.

    Only its absence gives ``None``: an installed proteinbenchmark that fails
    to import would otherwise pass for an absent one, and its targets would be
    run with this project's built-in conditions, or refused as unknown.

    Raises
    ------
    ProteinbenchmarkImportError
        Naming the error the import raised.
    """
    try:
        import proteinbenchmark
    except ModuleNotFoundError as error:
        if error.name == "proteinbenchmark":
            return None
        raise _import_failed(error) from error
    except Exception as error:  # a broken install can raise anything while importing
        raise _import_failed(error) from error
    return proteinbenchmark


def _import_failed(error: BaseException) -> ProteinbenchmarkImportError:
    return ProteinbenchmarkImportError(
        f"proteinbenchmark is installed but importing it fails ({type(error).__name__}: {error}); "
        f"its target catalog and builder cannot be used, and the built-in conditions are no "
        f"substitute. Repair the environment (the image, or PROTBENCH_PROTEINBENCHMARK_REF), or "
        f"uninstall proteinbenchmark to run only the local target")


def _proteinbenchmark_catalog():
    """proteinbenchmark's ``benchmark_targets``; ``None`` where it is not installed."""
    module = import_proteinbenchmark()
    return None if module is None else module.benchmark_targets


def target_conditions(target: str, ff: str | None = None) -> TargetConditions:
    """Look a target up in proteinbenchmark's catalog when importable, else locally.

    A local target with a force field of :data:`LOCAL_FORCE_FIELD_CONDITIONS`
    (built here, never by proteinbenchmark) takes the conditions given there.

    Raises
    ------
    UnknownTargetError
        When neither catalog knows ``target``.
    ProteinbenchmarkImportError
        When proteinbenchmark is installed but cannot be imported, whatever
        the target.
    """
    catalog = _proteinbenchmark_catalog()
    if (target, ff) in LOCAL_FORCE_FIELD_CONDITIONS:
        return LOCAL_FORCE_FIELD_CONDITIONS[(target, ff)]
    if catalog is not None and target in catalog:
        entry = catalog[target]

        def optional(key, unit_name):
            return _magnitude(entry[key], unit_name) if entry.get(key) is not None else None

        def optional_int(key):
            return int(entry[key]) if entry.get(key) is not None else None

        return TargetConditions(
            name=target,
            temperature_kelvin=_magnitude(entry["temperature"], "kelvin"),
            pressure_atm=_magnitude(entry["pressure"], "atmosphere"),
            equil_length_ns=optional("equil_traj_length", "nanosecond"),
            equil_frame_ps=optional("equil_frame_length", "picosecond"),
            equil_timestep_fs=optional("equil_timestep", "femtosecond"),
            # Frictions are rates: per picosecond is picosecond**-1.
            equil_friction_per_ps=_rate(entry.get("equil_langevin_friction")),
            equil_barostat_frequency=optional_int("equil_barostat_frequency"),
            friction_per_ps=_rate(entry.get("langevin_friction")),
            barostat_frequency=optional_int("barostat_frequency"),
            source="proteinbenchmark",
        )
    if target in LOCAL_TARGETS:
        return LOCAL_TARGETS[target]
    known = sorted(set(LOCAL_TARGETS) | set(catalog or ()))
    where = "proteinbenchmark's catalog or " if catalog is not None else ""
    raise UnknownTargetError(
        f"target {target!r} is unknown to {where}proteinbenchmark-nrp "
        f"(known: {', '.join(known)}); set PROTBENCH_TARGET to a known target, "
        f"or add it to LOCAL_TARGETS in umbrella-scripts/protbench_nrp/science.py"
    )
