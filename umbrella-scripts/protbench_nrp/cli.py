"""Command-line pieces shared by the stage scripts in ``umbrella-scripts/``.

Every option of a stage also reads the ``PROTBENCH_*`` variable shown in its
help, which is how a Job configures it. The options that steered MD and the
windows share are defined here once, grouped into decorators, so that a
variable means the same, with the same default, in every stage; a script
lists only its own options. Each option is named after the settings field it
feeds, so a script can pass what it gets straight to its settings'
``resolve``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Protocol

import click

from . import science
from .engine import EngineError, ResumeError, StopSignals
from .reporters import ResumeMismatchError

class Stage(Protocol):
    """What :func:`run_stage` runs: an umbrella window, steered MD."""

    def run(self, stop: StopSignals) -> int: ...


#: What any stage raises for a setting, an input or a checkpoint it cannot use.
_STAGE_ERRORS = (EngineError, ResumeError, ResumeMismatchError)


def env_option(flag: str, variable: str, kind, default=None, help: str = "", field: str | None = None,
               **extra):
    """A click option that also reads ``variable``; ``--help`` shows both it and the default.

    Parameters
    ----------
    flag : str
        The option, e.g. ``"--timestep"``.
    variable : str
        The environment variable read when the option is not given.
    kind : type
        Its click type.
    default : optional
        Written into the help text rather than shown by click, so that the
        options whose default comes from the target can say so instead.
    help : str
    field : str, optional
        The parameter name passed to the command, when not the flag's.
    **extra
        Passed to :func:`click.option`.
    """
    shown = f" [default: {default}]" if default is not None else ""
    names = (flag,) if field is None else (flag, field)
    if default is not None:
        # An explicit default=None would make click drop required=True.
        extra["default"] = default
    return click.option(*names, envvar=variable, type=kind, show_envvar=True,
                        help=f"{help}{shown}", **extra)


def option_group(*options):
    """One decorator applying ``options`` in the order given, as stacked decorators would list them."""
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


def results_option(help: str):
    """``-o/--output_directory``, the results root (``PROTBENCH_RESULTS_DIR``, where a pod mounts it)."""
    return click.option("-o", "--output_directory", "output_directory", envvar="PROTBENCH_RESULTS_DIR",
                        type=click.Path(file_okay=False, path_type=Path), required=True,
                        show_envvar=True, help=help)


#: Which campaign: target and force field (the setup stage needs no more).
campaign_options = option_group(
    env_option("--target", "PROTBENCH_TARGET", str, help="Benchmark target, e.g. villin or gb3.",
               required=True),
    env_option("--ff", "PROTBENCH_FF", str, help="Force field name.", required=True))

#: Which run of the campaign: target, force field and replica.
run_options = option_group(
    campaign_options,
    env_option("--replica", "PROTBENCH_REPLICA", int, help="Replica, from 1.", required=True))

#: Where the windows lie along Q; steered MD pulls through the same centres.
window_centre_options = option_group(
    env_option("--n-windows", "PROTBENCH_N_WINDOWS", int, science.N_WINDOWS, "Number of windows."),
    env_option("--cv-start", "PROTBENCH_CV_START", float, science.CV_START, "Centre of window 0."),
    env_option("--cv-end", "PROTBENCH_CV_END", float, science.CV_END, "Centre of the last window."))

#: Thermodynamic conditions and equilibration, which steered MD shares with every window.
equilibration_options = option_group(
    env_option("--temperature", "PROTBENCH_TEMPERATURE", float, None,
               "Temperature, K [default: target's].", field="temperature_kelvin"),
    env_option("--pressure", "PROTBENCH_PRESSURE", float, None,
               "Pressure, atm; 0 = no barostat [default: target's].", field="pressure_atm"),
    env_option("--equil-length", "PROTBENCH_EQUIL_LENGTH", float, None,
               f"Equilibration length, ns [default: target's, else {science.EQUIL_LENGTH_NS}].",
               field="equil_length_ns"),
    env_option("--equil-timestep", "PROTBENCH_EQUIL_TIMESTEP", float, None,
               f"Equilibration timestep, fs [default: target's, else {science.EQUIL_TIMESTEP_FS}].",
               field="equil_timestep_fs"),
    env_option("--equil-frame", "PROTBENCH_EQUIL_FRAME", float, None,
               f"Equilibration frame interval, ps [default: target's, else {science.EQUIL_FRAME_PS}].",
               field="equil_frame_ps"))

#: The OpenMM platform; a resumed stage may get another one.
platform_options = option_group(
    env_option("--platform", "PROTBENCH_PLATFORM", str, science.PLATFORM,
               "CUDA, OpenCL, CPU or Reference."),
    env_option("--precision", "PROTBENCH_PRECISION", str, science.PRECISION,
               "single, mixed or double (CUDA and OpenCL only)."))


def run_stage(make_stage: Callable[[], Stage], *errors: type[Exception]) -> None:
    """Build a stage and run what is left of it with SIGTERM and SIGINT caught; exit with its code.

    ``make_stage()`` checks the settings and returns the stage; its
    ``run(stop)`` returns 0 when the stage is complete and
    ``stop.exit_code`` (143 or 130) when a signal stopped it. An engine
    error, or one of ``errors``, ends the script with exit code 2 (bad
    settings or inputs: the Job's podFailurePolicy fails the Job, as no retry
    can help; protbench_nrp/exits.py) and just its message: the message names
    the setting or file at fault and the fix, which a traceback would bury.
    """
    with StopSignals() as stop:
        try:
            code = make_stage().run(stop)
        except _STAGE_ERRORS + errors as error:
            raise StageInputError(str(error)) from None
    sys.exit(code)


class StageInputError(click.ClickException):
    """A setting, input or checkpoint a stage cannot use: exits 2 (exits.EXIT_BAD_INPUT)."""

    exit_code = 2


__all__ = ["env_option", "option_group", "results_option", "campaign_options", "run_options", "window_centre_options",
           "equilibration_options", "platform_options", "run_stage"]
