#!/usr/bin/env python3
"""Run, or resume, the steered MD of one replica: the starting structure of every window.

Every option also reads the ``PROTBENCH_*`` variable named in its help, which
is how a Job configures it. Equilibrates from the minimized structure, then
pulls Q from the first window centre past the last, saving
``S/replica-{R}/S-window-{WW}.pdb`` as Q crosses each centre. SIGTERM or
SIGINT stop it at the next frame with a checkpoint written (exit 143 or 130);
a finished replica exits 0 and touches nothing; a pull that ends before Q
crossed every centre exits 1 naming the Q it reached.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import click  # noqa: E402

from protbench_nrp import science, steered  # noqa: E402
from protbench_nrp.engine import EngineError, ResumeError, StopSignals  # noqa: E402
from protbench_nrp.reporters import ResumeMismatchError  # noqa: E402
from protbench_nrp.systems import SetupError  # noqa: E402


def _option(name, variable, kind, default=None, help="", **extra):
    shown = f" [default: {default}]" if default is not None else ""
    return click.option(name, envvar=variable, type=kind, default=default, show_envvar=True,
                        help=f"{help}{shown}", **extra)


@click.command(context_settings={"max_content_width": 100})
@click.option("-o", "--output_directory", "output_directory", envvar="PROTBENCH_RESULTS_DIR",
              type=click.Path(file_okay=False, path_type=Path), required=True, show_envvar=True,
              help="Results root holding the setup stage's outputs; outputs go below it.")
@_option("--target", "PROTBENCH_TARGET", str, help="Benchmark target.", required=True)
@_option("--ff", "PROTBENCH_FF", str, help="Force field name.", required=True)
@_option("--replica", "PROTBENCH_REPLICA", int, help="Replica, from 1.", required=True)
@_option("--n-windows", "PROTBENCH_N_WINDOWS", int, science.N_WINDOWS, "Number of windows.")
@_option("--cv-start", "PROTBENCH_CV_START", float, science.CV_START, "Centre of window 0.")
@_option("--cv-end", "PROTBENCH_CV_END", float, science.CV_END, "Centre of the last window.")
@_option("--umbrella-k", "PROTBENCH_UMBRELLA_K", float, science.UMBRELLA_K_KCAL_PER_MOL,
         "Force constant of the windows, kcal/mol; pulls with it unless --steered-k is set.")
@_option("--steered-k", "PROTBENCH_STEERED_K", float, None,
         "Force constant k of k*(Q-Q0)^2 while pulling, kcal/mol [default: --umbrella-k].")
@_option("--pull-length", "PROTBENCH_PULL_LENGTH", float, steered.PULL_LENGTH_NS,
         "Time over which Q0 moves past the last centre, ns.")
@_option("--pull-frame", "PROTBENCH_PULL_FRAME", float, steered.PULL_FRAME_PS,
         "Interval at which Q is checked against the centres and recorded, ps.")
@_option("--temperature", "PROTBENCH_TEMPERATURE", float, None, "Temperature, K [default: target's].")
@_option("--pressure", "PROTBENCH_PRESSURE", float, None,
         "Pressure, atm; 0 = no barostat [default: target's].")
@_option("--equil-length", "PROTBENCH_EQUIL_LENGTH", float, None,
         f"Equilibration length, ns [default: target's, else {science.EQUIL_LENGTH_NS}].")
@_option("--equil-timestep", "PROTBENCH_EQUIL_TIMESTEP", float, science.EQUIL_TIMESTEP_FS,
         "Equilibration timestep, fs.")
@_option("--equil-frame", "PROTBENCH_EQUIL_FRAME", float, None,
         f"Equilibration frame interval, ps [default: target's, else {science.EQUIL_FRAME_PS}].")
@_option("--timestep", "PROTBENCH_TIMESTEP", float, science.TIMESTEP_FS, "Pulling timestep, fs.")
@_option("--checkpoint-minutes", "PROTBENCH_CHECKPOINT_MINUTES", float, science.CHECKPOINT_MINUTES,
         "Wall-clock minutes between checkpoints.")
@_option("--platform", "PROTBENCH_PLATFORM", str, science.PLATFORM, "CUDA, OpenCL, CPU or Reference.")
@_option("--precision", "PROTBENCH_PRECISION", str, science.PRECISION,
         "single, mixed or double (CUDA and OpenCL only).")
def main(output_directory, target, ff, replica, n_windows, cv_start, cv_end, umbrella_k, steered_k,
         pull_length, pull_frame, temperature, pressure, equil_length, equil_timestep, equil_frame,
         timestep, checkpoint_minutes, platform, precision):
    """Run, or resume, the steered MD of one replica."""
    with StopSignals() as stop:
        try:
            settings = steered.SteeredSettings.resolve(
                target, ff, replica, temperature_kelvin=temperature, pressure_atm=pressure,
                equil_length_ns=equil_length, equil_frame_ps=equil_frame, n_windows=n_windows,
                cv_start=cv_start, cv_end=cv_end,
                k_kcal_per_mol=umbrella_k if steered_k is None else steered_k,
                pull_length_ns=pull_length, pull_frame_ps=pull_frame,
                equil_timestep_fs=equil_timestep, timestep_fs=timestep,
                checkpoint_minutes=checkpoint_minutes, platform=platform, precision=precision)
            code = steered.SteeredMD(output_directory, settings).run(stop)
        except (EngineError, SetupError, ResumeError, ResumeMismatchError,
                steered.PullIncompleteError) as error:
            raise click.ClickException(str(error)) from None
    sys.exit(code)


if __name__ == "__main__":
    main()
