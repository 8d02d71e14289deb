"""Command-line pieces shared by the stage scripts in ``umbrella-scripts/``.

Every option of a stage also reads the ``PROTBENCH_*`` variable shown in its
help, which is how a Job configures it. Each option is made from that
variable's entry in :mod:`protbench_nrp.variables`, so a variable means the
same, with the same default, in every stage. Each option is named after the
settings field it feeds, so a script can pass what it gets straight to
:func:`~protbench_nrp.variables.stage_settings`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Protocol

import click

from .engine import EngineError, ResumeError, StopSignals
from .reporters import ResumeMismatchError
from .variables import SCRIPT_VARIABLES, options

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
campaign_options = options("PROTBENCH_TARGET", "PROTBENCH_FF")

#: Which run of the campaign: target, force field and replica.
run_options = options("PROTBENCH_TARGET", "PROTBENCH_FF", "PROTBENCH_REPLICA")

#: Where the windows lie along Q; steered MD pulls through the same centres.
window_centre_options = options("PROTBENCH_N_WINDOWS", "PROTBENCH_CV_START", "PROTBENCH_CV_END")

#: Thermodynamic conditions and equilibration, which steered MD shares with every window.
equilibration_options = options("PROTBENCH_TEMPERATURE", "PROTBENCH_PRESSURE", "PROTBENCH_EQUIL_LENGTH",
                                "PROTBENCH_EQUIL_TIMESTEP", "PROTBENCH_EQUIL_FRAME")

#: The OpenMM platform; a resumed stage may get another one.
platform_options = options("PROTBENCH_PLATFORM", "PROTBENCH_PRECISION")


def stage_options(stage: str):
    """Every option of ``stage``'s script but ``-o``, from :data:`variables.SCRIPT_VARIABLES`."""
    return options(*SCRIPT_VARIABLES[stage])


def run_stage(make_stage: Callable[[], Stage], *errors: type[Exception]) -> None:
    """Build a stage and run what is left of it with SIGTERM and SIGINT caught; exit with its code.

    ``make_stage()`` checks the settings and returns the stage; its
    ``run(stop)`` returns 0 when the stage is complete and
    ``stop.exit_code`` (143 or 130) when a signal stopped it. An engine
    error, or one of ``errors``, ends the script with exit code 1 and just
    its message: the message names the setting or file at fault and the fix,
    which a traceback would bury.
    """
    with StopSignals() as stop:
        try:
            code = make_stage().run(stop)
        except _STAGE_ERRORS + errors as error:
            raise click.ClickException(str(error)) from None
    sys.exit(code)


__all__ = ["env_option", "option_group", "results_option", "campaign_options", "run_options", "window_centre_options",
           "equilibration_options", "platform_options", "stage_options", "run_stage"]
