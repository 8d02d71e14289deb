"""The command line of ``run-umbrella-windows.py``: options in, one mode out.

:func:`main` turns the file's constants and the options into one of five
modes: a cluster launch (or ``--relaunch``/``--extend``; :mod:`launcher`), a
``--dry-run`` (:mod:`launcher`, printing instead of applying), ``--follow``
(:mod:`follow`), ``--local`` (:mod:`local`) or ``--status`` (:mod:`status`; with ``--local`` or
``--demo``, a campaign of this machine, for which no cluster is asked). Each mode's module is imported
only when it is chosen: ``--local`` (``--demo`` included) plans its Jobs with
:mod:`jobs` alone and loads nothing of the Kubernetes side (launcher,
manifests, cluster, policy, pinning, preflight), and a cluster launch does not
load the local runner.

Every error of the library derives from
:class:`~protbench_nrp.errors.ProtbenchError`, whose message names the thing at
fault and the fix: it reaches the user as that message, never a traceback. A
launch or dry run checks everything before its first side effect, so its
errors, and any mode's refused constants, print ``refused: ...`` with
:data:`~protbench_nrp.jobs.EXIT_REFUSED`; an error once ``--local`` or
``--status`` is under way prints ``error: ...`` and exits non-zero too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from .errors import ProtbenchError
from .jobs import EXIT_REFUSED, CampaignConfig, LaunchRefused, LaunchSettings, jobs_for_this_machine
from .layout import STAGES

__all__ = ["cli", "main", "parse_selection", "local_command", "LAUNCHER"]

#: How the commands this one suggests start: the launcher, run from the repository root.
LAUNCHER = "./run-umbrella-windows.py"


def parse_selection(text: str, option: str = "selection") -> tuple[int, ...] | None:
    """``"1,3,5-7"`` -> ``(1, 3, 5, 6, 7)``; ``"all"`` -> ``None`` (everything)."""
    if text.strip().lower() == "all":
        return None
    chosen: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise click.BadParameter(f"{part.strip()!r} is not a number or a range like 3-7", param_hint=option)
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise click.BadParameter(f"range {part.strip()!r} runs backwards", param_hint=option)
        chosen.extend(range(first, last + 1))
    return tuple(chosen)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dry-run", is_flag=True,
              help="Print every manifest as one YAML stream and stop: no file, no kubectl, no network.")
@click.option("--stage", type=click.Choice(STAGES), default=None,
              help="Which Jobs: setup (once), steered (one per replica) or window. Overrides STAGE.")
@click.option("--replicas", metavar="LIST", default=None,
              help="Replicas to launch, e.g. 2 or 1,3 or 1-2 ('all': every one). Overrides REPLICAS.")
@click.option("--windows", metavar="LIST", default=None,
              help="Windows to launch, e.g. 4 or 0-9,17 ('all': every one). Overrides WINDOWS.")
@click.option("--skip-preflight", is_flag=True,
              help="Do not check the bucket for the Jobs' inputs before applying (PREFLIGHT = False).")
@click.option("--local", "local_run", is_flag=True,
              help="Run the selected Jobs on this machine with the same scripts and environment.")
@click.option("--max-parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --local: how many Jobs run at once.")
@click.option("--demo", is_flag=True, help="Use the bundled demo campaign instead of the constants.")
@click.option("--status", "status", is_flag=True,
              help="Show how far the selected Jobs have got; with --local (or --demo) a campaign of this "
                   "machine: every stage, no cluster asked.")
@click.option("--status-source", type=click.Choice(["local", "bucket"]), default="local",
              envvar="PROTBENCH_STATUS_SOURCE", show_default=True,
              help="With --status: read progress from LOCAL_RESULT_DIR or from the bucket.")
@click.option("--no-kubectl", is_flag=True,
              help="With --status: do not ask the cluster for Job states.")
@click.option("--relaunch", is_flag=True,
              help="Replace the selected Jobs whose Job is Failed or gone and whose results are unfinished; "
                   "the old provenance is kept as NAME.attempt-K.yaml.")
@click.option("--extend", is_flag=True,
              help="As --relaunch, and also replace Complete Jobs and finished windows, to run them further "
                   "(a longer --production-length).")
@click.option("--production-length", "production_length_ns", type=click.FloatRange(min=0, min_open=True),
              metavar="NS", default=None,
              help="Each window's production in ns, instead of PROTBENCH_PRODUCTION_LENGTH in EXTRA_ENV (or the "
                   "demo's): with --extend or --local, selected windows finished shorter run on from their "
                   "checkpoints.")
@click.option("--follow", "follow_run", is_flag=True,
              help="Take the selection, and every stage it needs, to finished results on the cluster: submit "
                   "each Job once its inputs exist, relaunch retryable failures, then analyse.")
@click.option("--poll", "poll_s", type=float, default=None, envvar="PROTBENCH_FOLLOW_POLL", metavar="SECONDS",
              help="With --follow: seconds between looks at the cluster and the results [default: 120].")
@click.option("--max-attempts", type=int, default=None, envvar="PROTBENCH_FOLLOW_MAX_ATTEMPTS",
              help="With --follow: launches a Job gets, its first included, before it is given up [default: 4].")
@click.option("--max-gpu-hours", type=float, default=None, envvar="PROTBENCH_FOLLOW_MAX_GPU_HOURS", metavar="H",
              help="With --follow: submit nothing that would take the campaign's recorded GPU-hours past H "
                   "(see docs/following.md for the estimate) [default: no budget].")
@click.option("--print-follower-job", is_flag=True,
              help="With --follow: run its checks, then print, instead of following, the manifests that run the "
                   "follower as a CPU-only Job in the namespace (pipe them to kubectl apply -f -).")
@click.pass_obj
def cli(obj, dry_run, stage, replicas, windows, skip_preflight, local_run, max_parallel, demo, status,
        status_source, no_kubectl, relaunch, extend, production_length_ns, follow_run, poll_s, max_attempts,
        max_gpu_hours, print_follower_job):
    """Launch one Kubernetes Job per selected replica and window (see README.md)."""
    config, settings = obj
    local_status = status and (local_run or demo)  # a campaign of this machine: no cluster to ask
    if sum((dry_run, local_run, status)) > 1 and not (local_status and not dry_run):
        raise click.UsageError("choose one of --dry-run, --local and --status (--local --status: how far a "
                               "--local campaign has got)")
    if (relaunch or extend) and (local_run or status or demo):
        raise click.UsageError("--relaunch and --extend replace cluster Jobs: not with --local, --status or --demo")
    if follow_run and (dry_run or local_run or status or relaunch or extend or demo):
        raise click.UsageError("--follow runs the campaign on the cluster by itself: not with --dry-run, "
                               "--local, --status, --relaunch, --extend or --demo")
    if not follow_run and (poll_s is not None or max_attempts is not None or max_gpu_hours is not None
                           or print_follower_job):
        raise click.UsageError("--poll, --max-attempts, --max-gpu-hours and --print-follower-job go with --follow")
    if demo and not (dry_run or local_run or status):
        # The demo's lengths are minutes of CPU time: never a cluster campaign.
        raise click.UsageError("--demo runs on this machine: add --local (or --dry-run, --status)")
    if local_status and status_source == "bucket":
        raise click.UsageError("--status-source bucket (or PROTBENCH_STATUS_SOURCE=bucket) follows a cluster "
                               "campaign; a --local or --demo one has its results in LOCAL_RESULT_DIR only: "
                               "drop it")
    if demo or local_run:
        from . import local  # only these modes need it; a cluster launch stays quick to start
    if demo:
        config = local.demo_config(config)
    changes = {"stage": stage} if stage else {}
    if replicas is not None:
        changes["replicas"] = parse_selection(replicas, "--replicas")
    if windows is not None:
        changes["windows"] = parse_selection(windows, "--windows")
    if production_length_ns is not None:  # after the demo's lengths, which it overrides too
        changes["extra_env"] = {**config.extra_env, "PROTBENCH_PRODUCTION_LENGTH": f"{production_length_ns:g}"}
    config = dataclasses.replace(config, **changes)
    if skip_preflight:
        settings = dataclasses.replace(settings, preflight=False)
    try:
        if local_status:
            from .status import show_status

            # Every stage --local runs for this selection, one row each; the cluster is never asked.
            code = show_status(local.campaign_jobs(jobs_for_this_machine(config, settings.repo_dir), config),
                               config, local_command=local_command(demo))
        elif local_run:
            code = local.run_local(jobs_for_this_machine(config, settings.repo_dir), config, max_parallel=max_parallel,
                                   launcher_command=local_command(demo))
        elif status:
            from .status import show_status

            code = show_status(jobs_for_this_machine(config, settings.repo_dir), config,
                               use_kubectl=not no_kubectl, source=status_source)
        elif follow_run:
            from . import follow

            follow_settings = follow.FollowSettings(
                follow.DEFAULT_POLL_S if poll_s is None else poll_s,
                follow.DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts, max_gpu_hours)
            follow.check_follow_options(config, follow_settings, {"replicas": replicas is not None,
                                                                  "windows": windows is not None})
            if print_follower_job:
                from .follower_job import print_follower_job as print_job

                code = print_job(config, settings, follow_settings)
            else:
                code = follow.follow(config, settings, follow_settings)
        else:
            from .launcher import launch  # the Kubernetes side: only a launch or a dry run loads it

            code = launch(config, settings, dry_run=dry_run, relaunch=relaunch, extend=extend)
    except ProtbenchError as error:
        if isinstance(error, LaunchRefused) or not (local_run or status):
            # Refused before anything ran: a launch checks everything before its first side effect.
            click.echo(f"refused: {error}", err=True)
            click.echo("Nothing was applied.", err=True)
        else:
            click.echo(f"error: {error}", err=True)
            if local_run and not status:
                click.echo("--local stopped: finished Jobs are kept, and the others resume from their "
                           "checkpoints next time.", err=True)
        code = EXIT_REFUSED
    raise SystemExit(code)


def local_command(demo: bool) -> str:
    """The command that runs (and resumes) a campaign on this machine: the demo's, or the constants'."""
    return f"{LAUNCHER} --demo --local" if demo else f"{LAUNCHER} --local"


def main(config: CampaignConfig, *, repo_dir: Path | str, template_path: Path | str,
         preflight: bool = True, argv: list[str] | None = None) -> None:
    """Run the command line for ``config``; exits with the launch's status.

    Parameters
    ----------
    config : CampaignConfig
        The constants of ``run-umbrella-windows.py``.
    repo_dir : path
        The git repository the pods clone a commit of (the launcher's own).
    template_path : path
        ``k8s_template.yaml``.
    preflight : bool
        ``PREFLIGHT``: check the bucket before applying unless ``--skip-preflight``.
    argv : list of str, optional
        Command-line arguments; ``sys.argv[1:]`` when omitted.
    """
    settings = LaunchSettings(Path(repo_dir), Path(template_path), preflight)
    cli.main(args=argv, prog_name="run-umbrella-windows.py", obj=(config, settings))
