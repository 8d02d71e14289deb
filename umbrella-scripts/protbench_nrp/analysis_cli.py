"""The ``analyze-umbrella-windows.py`` command: a campaign, campaigns side by side, or windows from any engine.

Its options read ``PROTBENCH_*`` variables (the settings registry,
:mod:`protbench_nrp.variables`, describes them). Everything is read and
checked before the first file is written: a refusal leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .analysis import (DEFAULT_OVERLAP_THRESHOLD, analyze_campaign, comparison_rows, load_campaign,
                       parse_campaign_spec, results_origin, summary_lines, write_comparison, write_outputs)
from .cvaxis import LINE, CVAxis
from .errors import ProtbenchError
from .layout import BUCKET_PREFIX, Campaign
from .metadata import read_metadata
from .pmf import DEFAULT_BOOTSTRAPS, DEFAULT_METHOD, KDE_BANDWIDTH_PER_WINDOW_SPACING, METHODS
from .s3 import bucket_client
from .states import parse_states
from .store import BucketStore, LocalStore

#: Options that only windows read with --metadata use, and options only a campaign uses.
_METADATA_ONLY = ("cv_column", "temperature", "period", "cv_min", "name")
_CAMPAIGN_ONLY = ("target", "ff", "compare", "replicas", "bucket", "upload_report", "fold_boundary")


def build_command():
    """The command (click), every option also read from the environment."""
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("campaigns", nargs=-1, metavar="[TARGET:FF]...")
    @click.option("-o", "--results-dir", "results_dir", type=click.Path(file_okay=False),
                  default="results", show_default=True, envvar="PROTBENCH_RESULTS_DIR",
                  help="Results root: read from it (unless --bucket) and write "
                       "{target}-{ff}/analysis/ into it. With --metadata: the directory the "
                       "{name}-* files are written into.")
    @click.option("--target", envvar="PROTBENCH_TARGET", help="Benchmark target.")
    @click.option("--ff", envvar="PROTBENCH_FF", help="Force field name.")
    @click.option("--compare", "compare", is_flag=True,
                  help="Analyse the campaigns given as TARGET:FF arguments side by side: one PNG "
                       "of their PMFs and one CSV of dG_fold, written under comparison/.")
    @click.option("-r", "--replica", "replicas", type=click.IntRange(min=1), multiple=True,
                  envvar="PROTBENCH_ANALYSIS_REPLICAS",
                  help="Analyse only this replica (repeat for several); all found by default.")
    @click.option("--bucket", default="", envvar="PROTBENCH_BUCKET",
                  help="Read CV and parameter files straight from this S3 bucket instead of "
                       "the results root. Keys and endpoint as for the launcher's preflight: the "
                       "rclone remote's section of the rclone config, else AWS_ACCESS_KEY_ID, "
                       "AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL.")
    @click.option("--bucket-prefix", default=BUCKET_PREFIX, show_default=True,
                  envvar="PROTBENCH_BUCKET_PREFIX", help="Key prefix of the results root in the bucket.")
    @click.option("--rclone-remote", default="nrp", show_default=True,
                  envvar="PROTBENCH_RCLONE_REMOTE",
                  help="Remote of the rclone config whose keys and endpoint reach the bucket.")
    @click.option("--endpoint-url", default=None, envvar="AWS_ENDPOINT_URL",
                  help="S3 endpoint of the bucket (overrides the rclone config's).")
    @click.option("--metadata", type=click.Path(dir_okay=False), default=None, envvar="PROTBENCH_METADATA",
                  help="Analyse the windows of this WHAM metadata file instead of a campaign: one line "
                       "per window, 'path centre K [correlation_time [temperature]]', K the force "
                       "constant of ½K(x−c)² in kcal/mol per CV unit², paths relative to the file.")
    @click.option("--cv-column", default="2", show_default=True, envvar="PROTBENCH_CV_COLUMN",
                  help="With --metadata: the CV's column in each time series (1 is the time), or its "
                       "field name in a PLUMED '#! FIELDS' header.")
    @click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
                  envvar="PROTBENCH_ANALYSIS_TEMPERATURE",
                  help="With --metadata: the temperature (K) of windows whose line gives none.")
    @click.option("--period", type=click.FloatRange(min=0, min_open=True), default=None,
                  envvar="PROTBENCH_CV_PERIOD",
                  help="With --metadata: the CV is periodic with this period, in its units (360 for "
                       "degrees, 6.283185307179586 for radians) [default: not periodic].")
    @click.option("--cv-min", type=float, default=None, envvar="PROTBENCH_CV_MIN",
                  help="With --period: one period runs from this value [default: -period/2].")
    @click.option("--name", default=None, envvar="PROTBENCH_ANALYSIS_NAME",
                  help="With --metadata: prefix of the files written [default: the metadata file's stem].")
    @click.option("--state", "states", multiple=True, envvar="PROTBENCH_STATES",
                  help="NAME=LO:HI, given twice: report dG = G(second) - G(first) between these two "
                       "ranges of the CV (LO < cv <= HI; round a periodic CV LO > HI runs across the "
                       "seam; on a line an empty end is open) [default: along Q the folding free "
                       "energy dG_fold].")
    @click.option("--discard-frames", type=click.IntRange(min=0), default=None,
                  envvar="PROTBENCH_DISCARD_FRAMES",
                  help="Drop this many leading production frames of every window as "
                       "equilibration [default: detected per window].")
    @click.option("--method", type=click.Choice(METHODS), default=DEFAULT_METHOD, show_default=True,
                  envvar="PROTBENCH_PMF_METHOD",
                  help="PMF estimator, both pymbar's FES: a Gaussian kernel density (kde) or a "
                       "histogram.")
    @click.option("--bin-width", type=click.FloatRange(min=0, min_open=True), default=None,
                  envvar="PROTBENCH_PMF_BIN_WIDTH",
                  help="Histogram bin width, or the KDE's grid spacing, along the CV [default: "
                       "histogram two bins per window spacing, KDE one kernel width].")
    @click.option("--kde-bandwidth", type=click.FloatRange(min=0, min_open=True), default=None,
                  envvar="PROTBENCH_KDE_BANDWIDTH",
                  help=f"Width of the KDE's Gaussian kernel along the CV [default: "
                       f"{KDE_BANDWIDTH_PER_WINDOW_SPACING:g} x the window spacing].")
    @click.option("--bins", "n_bins", type=click.IntRange(min=2), default=None,
                  envvar="PROTBENCH_PMF_BINS",
                  help="Histogram bins along the CV (instead of --bin-width) [default: two per "
                       "window spacing]; also the bins that find holes in the sampling.")
    @click.option("--bootstrap", "n_bootstraps", type=click.IntRange(min=0), default=DEFAULT_BOOTSTRAPS,
                  show_default=True, envvar="PROTBENCH_BOOTSTRAP",
                  help="Bootstrap resamples of the uncorrelated samples (whole replicas as blocks "
                       "when there are several); 0 uses MBAR's analytical errors (histogram only).")
    @click.option("--analytical-errors", is_flag=True,
                  help="MBAR's analytical errors instead of the bootstrap (same as --bootstrap 0).")
    @click.option("--seed", type=int, default=0, show_default=True, envvar="PROTBENCH_BOOTSTRAP_SEED",
                  help="Seed of the bootstrap.")
    @click.option("--fold-boundary", type=float, default=None, envvar="PROTBENCH_FOLD_BOUNDARY",
                  help="Folded means the CV above this [default: the barrier top between the "
                       "folded and unfolded minima of the PMF].")
    @click.option("--overlap-threshold", type=click.FloatRange(min=0, max=1),
                  default=DEFAULT_OVERLAP_THRESHOLD, show_default=True,
                  envvar="PROTBENCH_OVERLAP_THRESHOLD",
                  help="Warn about neighbouring windows whose MBAR overlap is below this.")
    @click.option("--report", is_flag=True, envvar="PROTBENCH_REPORT",
                  help="Also write {target}-{ff}-report.html: one self-contained page with the "
                       "plots and tables, to open from disk or share.")
    @click.option("--upload-report", is_flag=True,
                  help="With --bucket and --report: upload the report beside the results in the "
                       "bucket ({prefix}/{target}-{ff}/analysis/), as text/html.")
    @click.pass_context
    def analyze(ctx, campaigns, results_dir, target, ff, compare, replicas, bucket, bucket_prefix,
                rclone_remote, endpoint_url, metadata, cv_column, temperature, period, cv_min, name, states,
                discard_frames, method, bin_width, kde_bandwidth, n_bins, n_bootstraps, analytical_errors,
                seed, fold_boundary, overlap_threshold, report, upload_report):
        """Compute the PMF along the CV of umbrella windows with MBAR, and a two-state free energy.

        Writes into {target}-{ff}/analysis/: the PMF (CSV and the upstream-style
        mbar-*.dat files), dG_fold per replica and for all ({S}-folding.csv),
        forward/reverse convergence, a per-window table, what to run next, and
        plots; with --report one HTML page of it all. With --compare
        TARGET:FF TARGET:FF ... it analyses several campaigns and puts them side
        by side under comparison/. With --metadata FILE it analyses windows from
        any engine (GROMACS, PLUMED, AMBER, ...) listed in a WHAM metadata file,
        periodic ones with --period, and writes the same files into -o DIR.
        """
        import logging

        # pymbar's banners (no JAX, timeseries caveats) are not about this campaign.
        logging.getLogger("pymbar").setLevel(logging.ERROR)
        if analytical_errors:
            n_bootstraps = 0
        options = dict(discard_frames=discard_frames, n_bins=n_bins, n_bootstraps=n_bootstraps,
                       overlap_threshold=overlap_threshold, method=method, bin_width=bin_width,
                       kde_bandwidth=kde_bandwidth, seed=seed)
        source_of = ctx.get_parameter_source
        given = {key for key in ctx.params if source_of(key) in (click.core.ParameterSource.COMMANDLINE,
                                                                 click.core.ParameterSource.ENVIRONMENT)}
        try:
            if metadata:
                # A campaign's settings on the command line are a mistake; in the environment
                # (PROTBENCH_TARGET exported for the launcher) they are not about this file.
                stray = [f"--{key.replace('_', '-')}" for key in _CAMPAIGN_ONLY
                         if source_of(key) == click.core.ParameterSource.COMMANDLINE] + list(campaigns)
                if stray:
                    raise click.UsageError(
                        f"--metadata analyses the windows its file lists; {', '.join(stray)} "
                        f"belong{'s' if len(stray) == 1 else ''} to a campaign's analysis (two states of "
                        f"any CV are --state A=LO:HI --state B=LO:HI). Drop {'them' if len(stray) > 1 else 'it'}")
                axis = CVAxis(period, cv_min)
                chosen_states = parse_states(states, axis)
                samples = read_metadata(metadata, cv_column=cv_column, temperature_kelvin=temperature,
                                        axis=axis, name=name)
                analysis = analyze_campaign(samples, states=chosen_states, **options)
                analyses, written = [analysis], write_outputs(analysis, results_dir, report=report)
            else:
                stray = [f"--{key.replace('_', '-')}" for key in _METADATA_ONLY if key in given]
                if stray:
                    raise click.UsageError(
                        f"{', '.join(stray)} describe{'s' if len(stray) == 1 else ''} windows read with "
                        f"--metadata FILE; a campaign's Q is not periodic and its windows record their "
                        f"own temperature. Drop {'them' if len(stray) > 1 else 'it'}, or give --metadata")
                chosen_states = parse_states(states, LINE)
                if compare:
                    if len(campaigns) < 2:
                        raise click.UsageError("--compare needs at least two campaigns: --compare "
                                               "TARGET:FF TARGET:FF ...")
                    chosen = [parse_campaign_spec(text) for text in campaigns]
                else:
                    if campaigns:
                        raise click.UsageError(f"unexpected arguments {' '.join(campaigns)}: campaigns as "
                                               f"TARGET:FF go with --compare")
                    if not target or not ff:
                        missing = " and ".join(n for n, v in (("--target", target), ("--ff", ff)) if not v)
                        raise click.UsageError(f"missing {missing} (or PROTBENCH_TARGET/PROTBENCH_FF), "
                                               f"or compare campaigns with --compare TARGET:FF TARGET:FF, "
                                               f"or analyse windows from any engine with --metadata FILE")
                    chosen = [Campaign(target, ff)]
                if upload_report and not (bucket and report):
                    raise click.UsageError("--upload-report needs --bucket and --report")
                source = (BucketStore(bucket_client(endpoint_url, rclone_remote), bucket, bucket_prefix)
                          if bucket else LocalStore(results_dir))
                analyses, written = [], []
                for campaign in chosen:
                    samples = load_campaign(source, campaign, tuple(replicas) or None)
                    analysis = analyze_campaign(samples, states=chosen_states, fold_boundary=fold_boundary,
                                                **options)
                    # What to run next names a command that works where the results were made.
                    origin = "cluster" if bucket else results_origin(
                        source, campaign, [(w.replica, w.window) for w in analysis.windows])
                    analysis.next_steps = dataclasses.replace(analysis.next_steps, origin=origin)
                    written += write_outputs(analysis, results_dir, report=report and not compare)
                    analyses.append(analysis)
                if compare:
                    written += write_comparison(analyses, results_dir, report=report)
                if upload_report:
                    for path in [p for p in written if p.name.endswith("report.html")]:
                        key = path.relative_to(Path(results_dir)).as_posix()
                        source.write_bytes(key, path.read_bytes(), "text/html; charset=utf-8")
                        written.append(source.describe(key))
        except (ProtbenchError, ValueError) as error:  # AnalysisError, StoreError, S3AccessError, ...
            raise click.ClickException(str(error)) from None
        _echo(click, analyses, written, compare and not metadata)

    return analyze


def _echo(click, analyses, written, compare: bool) -> None:
    for analysis in analyses:
        prefix = f"{analysis.campaign.name}: " if compare else ""
        for warning in analysis.warnings:
            click.echo(f"warning: {prefix}{warning}", err=True)
        for line in summary_lines(analysis):
            click.echo(line)
        if not compare:
            click.echo("what to run next:")
            for line in analysis.next_steps.lines():
                click.echo(f"  {line}")
    if compare:
        click.echo("side by side:")
        for row in comparison_rows(analyses):
            key, label = (("dg_fold_kcal_per_mol", "dG_fold") if "dg_fold_kcal_per_mol" in row else
                          ("dg_kcal_per_mol", f"dG({row['states']})"))
            click.echo(f"  {row['campaign']}: {label} {row[key]:+.2f} ± "
                       f"{row['uncertainty_kcal_per_mol']:.2f} kcal/mol, folded minimum at "
                       f"{row['folded_minimum']:.3g}")
    for path in written:
        click.echo(f"wrote {path}")
