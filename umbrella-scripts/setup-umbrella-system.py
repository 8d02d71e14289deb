#!/usr/bin/env python3
"""Set up the umbrella System of one target and force field: the campaign's first Job.

Writes ``{T}-{FF}/setup/`` under the results root: the minimized structure,
the native contacts and the System XML holding the ``k*(Q-Q0)^2`` bias.
Run again after it finished, it changes nothing and exits 0.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import click  # noqa: E402

from protbench_nrp import science  # noqa: E402
from protbench_nrp.cli import results_option, stage_options  # noqa: E402
from protbench_nrp.layout import Campaign  # noqa: E402
from protbench_nrp.systems import SetupError, SetupFiles, set_up  # noqa: E402


@click.command(context_settings={"max_content_width": 100})
@results_option("Results root (/results in a pod); outputs go to {T}-{FF}/setup/ below it.")
@stage_options("setup")
def main(output_directory, target, ff, platform, precision, initial_pdb, padding_nm):
    from protbench_nrp.engine import EngineError, select_platform

    try:
        campaign = Campaign(target, ff)
        openmm_platform, properties = select_platform(platform, precision)
        report = set_up(output_directory, target, ff, platform=openmm_platform,
                        properties=properties, initial_pdb=initial_pdb,
                        padding_nm=padding_nm)
    except (SetupError, EngineError, science.UnknownTargetError,
            science.ProteinbenchmarkImportError, ValueError) as error:
        click.echo(f"setup-umbrella-system: {error}", err=True)
        sys.exit(2)
    files = SetupFiles(output_directory, campaign)
    verb = "already set up" if report.already_done else f"set up with {report.builder}"
    click.echo(f"{campaign.name}: {verb}; {report.n_contacts} native contacts, "
               f"Q(minimized) = {report.native_fraction:.4f}")
    for path in files.all():
        click.echo(f"  {path}")


if __name__ == "__main__":
    main()
