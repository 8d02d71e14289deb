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

from protbench_nrp.cli import results_option, run_stage, stage_options  # noqa: E402


@click.command(context_settings={"max_content_width": 100})
@results_option("Results root holding the window's inputs; outputs go below it.")
@stage_options("window")
def main(output_directory, **settings):
    """Run, or resume, one umbrella window."""
    from protbench_nrp.variables import stage_settings
    from protbench_nrp.window import UmbrellaWindow

    run_stage(lambda: UmbrellaWindow(output_directory, stage_settings("window", settings)))


if __name__ == "__main__":
    main()
