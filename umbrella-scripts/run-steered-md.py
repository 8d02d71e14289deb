#!/usr/bin/env python3
"""Run, or resume, the steered MD of one replica: the starting structure of every window.

Every option also reads the ``PROTBENCH_*`` variable named in its help, which
is how a Job configures it. Equilibrates from the minimized structure, then
pulls Q from the first window centre past the last, saving
``S/replica-{R}/S-window-{WW}.pdb`` as Q crosses each centre. SIGTERM or
SIGINT stop it at the next frame with a checkpoint written (exit 143 or 130);
a finished replica exits 0 and touches nothing; a pull that ends before Q
crossed every centre exits 1 naming the Q it reached; a blow-up it could not
recover from in ``PROTBENCH_MAX_BLOWUPS`` attempts exits 65 (engine.EXIT_BLOWN_UP).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import click  # noqa: E402

from protbench_nrp import science, steered  # noqa: E402
from protbench_nrp.cli import (blowup_options, env_option, equilibration_options,  # noqa: E402
                               platform_options, results_option, run_options, run_stage,
                               window_centre_options)
from protbench_nrp.systems import SetupError  # noqa: E402


@click.command(context_settings={"max_content_width": 100})
@results_option("Results root holding the setup stage's outputs; outputs go below it.")
@run_options
@window_centre_options
@env_option("--umbrella-k", "PROTBENCH_UMBRELLA_K", float, science.UMBRELLA_K_KCAL_PER_MOL,
            "Force constant of the windows, kcal/mol; pulls with it unless --steered-k is set.")
@env_option("--steered-k", "PROTBENCH_STEERED_K", float, None,
            "Force constant k of k*(Q-Q0)^2 while pulling, kcal/mol [default: --umbrella-k].")
@env_option("--pull-length", "PROTBENCH_PULL_LENGTH", float, steered.PULL_LENGTH_NS,
            "Time over which Q0 moves past the last centre, ns.", field="pull_length_ns")
@env_option("--pull-frame", "PROTBENCH_PULL_FRAME", float, steered.PULL_FRAME_PS,
            "Interval at which Q is checked against the centres and recorded, ps.",
            field="pull_frame_ps")
@equilibration_options
@env_option("--pull-timestep", "PROTBENCH_PULL_TIMESTEP", float, steered.PULL_TIMESTEP_FS,
            "Pulling timestep, fs.", field="pull_timestep_fs")
@env_option("--checkpoint-minutes", "PROTBENCH_CHECKPOINT_MINUTES", float, science.CHECKPOINT_MINUTES,
            "Wall-clock minutes between checkpoints.")
@platform_options
@blowup_options
def main(output_directory, umbrella_k, steered_k, **settings):
    """Run, or resume, the steered MD of one replica."""
    settings["k_kcal_per_mol"] = umbrella_k if steered_k is None else steered_k
    run_stage(lambda: steered.SteeredMD(output_directory, steered.SteeredSettings.resolve(**settings)),
              SetupError, steered.PullIncompleteError)


if __name__ == "__main__":
    main()
