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

from protbench_nrp.cli import results_option, run_stage, stage_options  # noqa: E402


@click.command(context_settings={"max_content_width": 100})
@results_option("Results root holding the setup stage's outputs; outputs go below it.")
@stage_options("steered")
def main(output_directory, **settings):
    """Run, or resume, the steered MD of one replica."""
    from protbench_nrp import steered
    from protbench_nrp.systems import SetupError
    from protbench_nrp.variables import stage_settings

    run_stage(lambda: steered.SteeredMD(output_directory, stage_settings("steered", settings)),
              SetupError, steered.PullIncompleteError)


if __name__ == "__main__":
    main()
