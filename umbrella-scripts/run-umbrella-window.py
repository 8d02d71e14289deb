#!/usr/bin/env python3
"""Run, or resume, one umbrella-sampling window in a pod.

Every option also reads the ``PROTBENCH_*`` variable named in its help, which
is how a Job configures it. The window resumes from wherever the previous pod
stopped, on whatever platform this one has; SIGTERM or SIGINT stop it at the
next frame with a checkpoint written (exit 143 or 130, so the Job restarts it);
a finished window exits 0 and touches nothing; a blow-up it could not recover
from in ``PROTBENCH_MAX_BLOWUPS`` attempts exits 65 (engine.EXIT_BLOWN_UP).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import click  # noqa: E402

from protbench_nrp import science  # noqa: E402
from protbench_nrp.cli import (blowup_options, env_option, equilibration_options,  # noqa: E402
                               platform_options, results_option, run_options, run_stage,
                               window_centre_options)


@click.command(context_settings={"max_content_width": 100})
@results_option("Results root holding the window's inputs; outputs go below it.")
@run_options
@env_option("--window", "PROTBENCH_WINDOW", int, help="Window index, e.g. 07.", required=True)
@window_centre_options
@env_option("--umbrella-k", "PROTBENCH_UMBRELLA_K", float, science.UMBRELLA_K_KCAL_PER_MOL,
            "Force constant k of k*(Q-Q0)^2, kcal/mol.", field="k_kcal_per_mol")
@equilibration_options
@env_option("--production-length", "PROTBENCH_PRODUCTION_LENGTH", float, science.PRODUCTION_LENGTH_NS,
            "Production length, ns.", field="production_length_ns")
@env_option("--timestep", "PROTBENCH_TIMESTEP", float, science.TIMESTEP_FS, "Production timestep, fs.",
            field="timestep_fs")
@env_option("--frame", "PROTBENCH_FRAME", float, science.FRAME_PS, "Production frame interval, ps.",
            field="frame_ps")
@env_option("--checkpoint", "PROTBENCH_CHECKPOINT", float, science.CHECKPOINT_PS,
            "Checkpoint (and trajectory segment) interval, ps.", field="checkpoint_ps")
@env_option("--save-state", "PROTBENCH_SAVE_STATE", float, science.SAVE_STATE_PS,
            "Interval of kept State XML files, ps.", field="save_state_ps")
@env_option("--checkpoint-minutes", "PROTBENCH_CHECKPOINT_MINUTES", float, science.CHECKPOINT_MINUTES,
            "Wall-clock minutes between extra checkpoints.")
@platform_options
@blowup_options
def main(output_directory, **settings):
    """Run, or resume, one umbrella window."""
    from protbench_nrp.window import UmbrellaWindow, WindowSettings

    run_stage(lambda: UmbrellaWindow(output_directory, WindowSettings.resolve(**settings)))


if __name__ == "__main__":
    main()
