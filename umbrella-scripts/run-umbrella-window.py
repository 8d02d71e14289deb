#!/usr/bin/env python3
"""Run, or resume, one umbrella-sampling window in a pod.

Every option also reads the ``PROTBENCH_*`` variable named in its help, which
is how a Job configures it. The window resumes from wherever the previous pod
stopped, on whatever platform this one has; SIGTERM or SIGINT stop it at the
next frame with a checkpoint written (exit 143 or 130, so the Job restarts it);
a finished window exits 0 and touches nothing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import click  # noqa: E402

from protbench_nrp import science  # noqa: E402
from protbench_nrp.engine import EngineError, ResumeError, StopSignals  # noqa: E402
from protbench_nrp.reporters import ResumeMismatchError  # noqa: E402


def _option(name, variable, kind, default=None, help="", **extra):
    shown = f" [default: {default}]" if default is not None else ""
    return click.option(name, envvar=variable, type=kind, default=default, show_envvar=True,
                        help=f"{help}{shown}", **extra)


@click.command(context_settings={"max_content_width": 100})
@click.option("-o", "--output_directory", "output_directory", envvar="PROTBENCH_RESULTS_DIR",
              type=click.Path(file_okay=False, path_type=Path), required=True, show_envvar=True,
              help="Results root holding the window's inputs; outputs go below it.")
@_option("--target", "PROTBENCH_TARGET", str, help="Benchmark target.", required=True)
@_option("--ff", "PROTBENCH_FF", str, help="Force field name.", required=True)
@_option("--replica", "PROTBENCH_REPLICA", int, help="Replica, from 1.", required=True)
@_option("--window", "PROTBENCH_WINDOW", int, help="Window index, e.g. 07.", required=True)
@_option("--n-windows", "PROTBENCH_N_WINDOWS", int, science.N_WINDOWS, "Number of windows.")
@_option("--cv-start", "PROTBENCH_CV_START", float, science.CV_START, "Centre of window 0.")
@_option("--cv-end", "PROTBENCH_CV_END", float, science.CV_END, "Centre of the last window.")
@_option("--umbrella-k", "PROTBENCH_UMBRELLA_K", float, science.UMBRELLA_K_KCAL_PER_MOL,
         "Force constant k of k*(Q-Q0)^2, kcal/mol.")
@_option("--temperature", "PROTBENCH_TEMPERATURE", float, None, "Temperature, K [default: target's].")
@_option("--pressure", "PROTBENCH_PRESSURE", float, None,
         "Pressure, atm; 0 = no barostat [default: target's].")
@_option("--equil-length", "PROTBENCH_EQUIL_LENGTH", float, None,
         f"Equilibration length, ns [default: target's, else {science.EQUIL_LENGTH_NS}].")
@_option("--equil-timestep", "PROTBENCH_EQUIL_TIMESTEP", float, science.EQUIL_TIMESTEP_FS,
         "Equilibration timestep, fs.")
@_option("--equil-frame", "PROTBENCH_EQUIL_FRAME", float, None,
         f"Equilibration frame interval, ps [default: target's, else {science.EQUIL_FRAME_PS}].")
@_option("--production-length", "PROTBENCH_PRODUCTION_LENGTH", float, science.PRODUCTION_LENGTH_NS,
         "Production length, ns.")
@_option("--timestep", "PROTBENCH_TIMESTEP", float, science.TIMESTEP_FS, "Production timestep, fs.")
@_option("--frame", "PROTBENCH_FRAME", float, science.FRAME_PS, "Production frame interval, ps.")
@_option("--checkpoint", "PROTBENCH_CHECKPOINT", float, science.CHECKPOINT_PS,
         "Checkpoint (and trajectory segment) interval, ps.")
@_option("--save-state", "PROTBENCH_SAVE_STATE", float, science.SAVE_STATE_PS,
         "Interval of kept State XML files, ps.")
@_option("--checkpoint-minutes", "PROTBENCH_CHECKPOINT_MINUTES", float, science.CHECKPOINT_MINUTES,
         "Wall-clock minutes between extra checkpoints.")
@_option("--platform", "PROTBENCH_PLATFORM", str, science.PLATFORM, "CUDA, OpenCL, CPU or Reference.")
@_option("--precision", "PROTBENCH_PRECISION", str, science.PRECISION,
         "single, mixed or double (CUDA and OpenCL only).")
def main(output_directory, target, ff, replica, window, n_windows, cv_start, cv_end, umbrella_k,
         temperature, pressure, equil_length, equil_timestep, equil_frame, production_length,
         timestep, frame, checkpoint, save_state, checkpoint_minutes, platform, precision):
    """Run, or resume, one umbrella window."""
    from protbench_nrp.window import UmbrellaWindow, WindowSettings

    with StopSignals() as stop:
        try:
            settings = WindowSettings.resolve(
                target, ff, replica, window, temperature_kelvin=temperature, pressure_atm=pressure,
                equil_length_ns=equil_length, equil_frame_ps=equil_frame, n_windows=n_windows,
                cv_start=cv_start, cv_end=cv_end, k_kcal_per_mol=umbrella_k,
                equil_timestep_fs=equil_timestep, production_length_ns=production_length,
                timestep_fs=timestep, frame_ps=frame, checkpoint_ps=checkpoint,
                save_state_ps=save_state, checkpoint_minutes=checkpoint_minutes,
                platform=platform, precision=precision)
            code = UmbrellaWindow(output_directory, settings).run(stop)
        except (EngineError, ResumeError, ResumeMismatchError) as error:
            raise click.ClickException(str(error)) from None
    sys.exit(code)


if __name__ == "__main__":
    main()
