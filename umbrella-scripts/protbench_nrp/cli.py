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

from . import exits
from .engine import BlownUpError, EngineError, ResumeError, StopSignals
from .errors import ProtbenchError
from .reporters import ResumeMismatchError
from .variables import SCRIPT_VARIABLES, options


class Stage(Protocol):
    """What :func:`run_stage` runs: an umbrella window, steered MD."""

    def run(self, stop: StopSignals) -> int: ...


#: What any stage raises for a setting, an input or a checkpoint it cannot use.
_STAGE_ERRORS = (EngineError, ResumeError, ResumeMismatchError)


def results_option(help: str):
    """``-o/--output_directory``, the results root (``PROTBENCH_RESULTS_DIR``, where a pod mounts it)."""
    return click.option("-o", "--output_directory", "output_directory", envvar="PROTBENCH_RESULTS_DIR",
                        type=click.Path(file_okay=False, path_type=Path), required=True,
                        show_envvar=True, help=help)


def stage_options(stage: str):
    """Every option of ``stage``'s script but ``-o``, from :data:`variables.SCRIPT_VARIABLES`."""
    return options(*SCRIPT_VARIABLES[stage])


def run_stage(make_stage: Callable[[], Stage], *errors: type[Exception]) -> None:
    """Build a stage and run what is left of it with SIGTERM and SIGINT caught; exit with its code.

    ``make_stage()`` checks the settings and returns the stage; its
    ``run(stop)`` returns 0 when the stage is complete and
    ``stop.exit_code`` (143 or 130) when a signal stopped it. An engine
    error, or one of ``errors``, ends the script with exit code 2 (bad
    settings or inputs: the Job's podFailurePolicy fails the Job, as no retry
    can help; protbench_nrp/exits.py) and just its message: the message names
    the setting or file at fault and the fix, which a traceback would bury. A
    blow-up the stage could not recover from ends it with
    :data:`~protbench_nrp.engine.EXIT_BLOWN_UP` and its message.
    """
    with StopSignals() as stop:
        try:
            code = make_stage().run(stop)
        except BlownUpError as error:
            click.echo(f"Error: {error}", err=True)
            code = error.exit_code
        except _STAGE_ERRORS + errors as error:
            raise StageInputError(str(error)) from None
    sys.exit(code)


class StageInputError(ProtbenchError, click.ClickException):
    """A setting, input or checkpoint a stage cannot use: exits 2 (exits.EXIT_BAD_INPUT)."""

    exit_code = exits.EXIT_BAD_INPUT


__all__ = ["results_option", "stage_options", "run_stage"]
