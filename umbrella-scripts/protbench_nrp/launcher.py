"""The launcher behind ``run-umbrella-windows.py``: constants in, Kubernetes Jobs out.

:func:`launch` reads top-down like the README: check the constants, render one
Job per selected replica and window from ``k8s_template.yaml``, check every
manifest (schema, NRP policy), refuse to replace any provenance file, check
that the script is committed and pushed, run the preflight checks, then write
each manifest into the results tree and ``kubectl create`` exactly that file.
Every check runs before the first side effect, so a refused launch leaves the
cluster and the results tree as they were.

``--relaunch`` (and ``--extend``) replace Jobs instead: :func:`plan_replacements`
asks the cluster once for the campaign's Jobs and refuses any that cannot be
replaced, then :func:`submit` deletes each old Job, waits until it is gone,
keeps its provenance as ``NAME.attempt-K.yaml`` and creates the new one.

The constants' checks and their expansion into Jobs are :mod:`jobs` (shared
with ``--local`` and ``--status``), the manifests :mod:`manifest`, the cluster
:mod:`cluster`, and the command line :mod:`command`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import shutil
from pathlib import Path

import click

from . import gitcheck, pinning, policy, preflight
from .cluster import KUBECTL_TIMEOUT_S, JobState, Kubectl, KubectlError, campaign_selector, kube_namespace
from .files import write_new_file
from .jobs import (EXIT_OK, EXIT_PARTLY_SUBMITTED, EXIT_REFUSED, CampaignConfig, ConfigError, JobSpec,
                   LaunchRefused, LaunchSettings, build_jobs, describe, stage_script, validate_config)
from .layout import window_tag
from .stages import STAGE_TABLE, stage_of
from .manifest import SchemaUnavailable, load_template, render_manifest, schema_errors, to_yaml, yaml_stream

__all__ = ["launch", "prepare", "Prepared", "submit", "plan_replacements", "LaunchSettings", "identity_line",
           "dry_run_summary", "SHIPPED_DEFAULTS", "EXIT_OK", "EXIT_REFUSED", "EXIT_PARTLY_SUBMITTED"]

#: The constants run-umbrella-windows.py ships with, and the CampaignConfig field of each: the
#: seed's own (its README copies jm's bucket and jm's rclone secret). A test keeps them equal to the file.
SHIPPED_DEFAULTS = {"INITIALS": ("initials", "jm"), "BUCKET": ("bucket", "proteinbenchmark-jm-bucket"),
                    "RCLONE_SECRET": ("rclone_secret", "jm-rclone-config")}


# -- the checks -------------------------------------------------------------------------

def check_manifests(jobs: list[JobSpec], manifests: list[dict], template_path: Path) -> None:
    """Every manifest passes the Kubernetes schema and the NRP policy, else :class:`LaunchRefused`.

    A template mistake repeats in every Job, so identical findings are
    reported once with the number of Jobs they affect.
    """
    findings: dict[str, list[str]] = {}
    for job, manifest in zip(jobs, manifests):
        try:
            errors = schema_errors(manifest)
        except SchemaUnavailable as error:
            raise LaunchRefused(f"cannot check the manifests against the Kubernetes schema: {error}") from None
        for error in errors:
            findings.setdefault(f"Kubernetes schema: {error}", []).append(job.name)
        for violation in policy.lint(manifest):
            findings.setdefault(f"NRP policy: {violation}", []).append(job.name)
    if findings:
        lines = [f"{finding} [{len(names)} of {len(jobs)} Jobs, e.g. {names[0]}]"
                 for finding, names in findings.items()]
        raise LaunchRefused(f"the manifests are not fit for the cluster (fix {template_path.name} or the "
                            f"constants):\n  - " + "\n  - ".join(lines))


def refuse_existing_provenance(jobs: list[JobSpec], config: CampaignConfig) -> None:
    """Refuse the whole launch when any of its provenance files exists already."""
    existing = [config.local_result_dir / job.provenance_path for job in jobs
                if (config.local_result_dir / job.provenance_path).exists()]
    if existing:
        listing = "\n  ".join(str(path) for path in existing)
        raise LaunchRefused(
            f"{len(existing)} of these Jobs were launched before; their provenance files exist:\n  {listing}\n"
            f"Replacing them would lose the record of those runs. Select only new replicas/windows "
            f"(--replicas, --windows), or replace a Failed or vanished Job with --relaunch (a Complete "
            f"one with --extend): the old provenance is kept beside the new one"
        )


def attempt_paths(job: JobSpec, config: CampaignConfig) -> list[Path]:
    """The archived provenance files ``NAME.attempt-K.yaml`` of ``job`` there are, in order."""
    paths = []
    for attempt in itertools.count(1):
        path = config.local_result_dir / config.campaign.manifest_attempt(job.stage, job.replica, job.window,
                                                                          attempt)
        if not path.exists():
            return paths
        paths.append(path)


def _is_finished(job: JobSpec, reading) -> bool | None:
    """Whether the stage table calls ``job`` done (``status.read_job_progress``'s completion);
    ``None`` when its results cannot be read. No window record: not done."""
    if reading is None or reading.error:
        return None
    return reading.completion is not None and reading.completion.done


def results_reader(config: CampaignConfig, settings: LaunchSettings):
    """Where --relaunch reads whether a Job's results are finished: the bucket, or (without
    preflight) LOCAL_RESULT_DIR, as ``--status --status-source`` would."""
    from .s3 import S3AccessError, bucket_client
    from .store import BucketStore, LocalStore

    if not settings.preflight:
        return LocalStore(config.local_result_dir)
    try:
        return BucketStore(bucket_client(rclone_remote=config.rclone_remote,
                                         other_fix=preflight.SKIP_FIX), config.bucket)
    except S3AccessError as error:
        raise LaunchRefused(f"cannot read the results in the bucket to tell finished Jobs: {error}") from None


def plan_replacements(jobs: list[JobSpec], config: CampaignConfig, kubectl: Kubectl, reader,
                      extend: bool) -> dict[str, JobState]:
    """The cluster state of every Job --relaunch (``extend``: --extend) replaces, else :class:`LaunchRefused`.

    One query for all the campaign's Jobs. A Job is replaced when it was
    launched before (its provenance, or an archived attempt, exists), its Job
    is Failed or gone, and its results are unfinished; ``extend`` also
    replaces Complete Jobs and finished results. Every Job that cannot be
    replaced is listed, with its state, and nothing is changed.
    """
    from .status import read_all_progress

    try:
        cluster = kubectl.job_states(campaign_selector(config))
    except KubectlError as error:
        raise LaunchRefused(f"cannot ask the cluster which Jobs can be replaced: {error}") from None
    progress = read_all_progress(reader, config.campaign, jobs)
    option = "--extend" if extend else "--relaunch"
    refusals, plan = [], {}
    for job in jobs:
        path = config.local_result_dir / job.provenance_path
        info = cluster.get(job.name)
        state = info.state if info else JobState.ABSENT
        finished = _is_finished(job, progress.get(job.name))
        if not path.exists() and not attempt_paths(job, config):
            refusals.append(f"{job.name}: never launched (no {path}); launch it without {option}")
        elif state is JobState.ACTIVE:
            refusals.append(f"{job.name}: its Job is active ({info.detail or 'running'}); wait for it, or "
                            f"delete it yourself if it must stop (kubectl delete job {job.name})")
        elif state is JobState.COMPLETE and not extend:
            refusals.append(f"{job.name}: its Job is Complete; run it further with --extend (and a longer "
                            f"--production-length NS)")
        elif finished is None:
            refusals.append(f"{job.name}: cannot tell whether its results are finished "
                            f"({progress[job.name].error}); fix that or look with --status")
        elif finished and not extend:
            refusals.append(f"{job.name}: its results are finished (Job {state.value}); run it further "
                            f"with --extend")
        else:
            plan[job.name] = state
    if refusals:
        raise LaunchRefused(f"{len(refusals)} of these Jobs cannot be replaced with {option}; nothing was "
                            f"changed:\n  " + "\n  ".join(refusals))
    return plan


def check_repository(config: CampaignConfig, repo_dir: Path, commit: str,
                     stages: tuple[str, ...] | None = None) -> gitcheck.Remote:
    """What the pods check out is what is here, and they can get it.

    The script of each of ``stages`` (default: the configured stage) is
    committed as it is on disk and executable, nothing under
    ``umbrella-scripts/`` (the library and pod scripts) differs from the
    commit, and the commit is on the remote whose URL is ``REPO_URL``.
    """
    scripts = list(dict.fromkeys(stage_script(config, stage) for stage in (stages or (config.stage,))))
    for script in scripts:
        gitcheck.check_script_committed(repo_dir, script)
    gitcheck.check_tree_committed(repo_dir)
    for script in scripts:
        gitcheck.check_executable(repo_dir, script)
    return gitcheck.check_pushed(repo_dir, config.repo_url, commit)


def pin_software(config: CampaignConfig) -> CampaignConfig:
    """``config`` running IMAGE by its digest and proteinbenchmark at a full commit, resolved now.

    A tag or branch that moves during a two-week campaign would change the
    software within one trajectory; the Jobs run what this resolves, the
    names as given are kept in their annotations.
    """
    if not config.proteinbenchmark_repo:
        raise ConfigError("PROTEINBENCHMARK_REPO is empty; set it in run-umbrella-windows.py to the "
                          "repository PROTEINBENCHMARK_REF belongs to (e.g. "
                          "'https://github.com/openforcefield/proteinbenchmark.git')")
    try:
        pinned = pinning.pin_software(config.image, config.proteinbenchmark_repo, config.proteinbenchmark_ref)
    except pinning.PinningError as error:
        raise LaunchRefused(str(error)) from None
    click.echo(f"Pinned IMAGE {pinned.image.tag_reference} to {pinned.image.digest}; proteinbenchmark "
               f"{pinned.proteinbenchmark_ref} to {pinned.proteinbenchmark_commit}")
    return dataclasses.replace(config, image=pinned.image.pinned_reference,
                               proteinbenchmark_ref=pinned.proteinbenchmark_commit, pinned=pinned)


def unpinned_note(config: CampaignConfig) -> str:
    """What a dry run says instead of asking the registry and the repository."""
    return (f"note: IMAGE {config.image} and PROTEINBENCHMARK_REF {config.proteinbenchmark_ref} are shown "
            f"unresolved (--dry-run asks no registry and no repository); a launch pins them to the image's "
            f"digest and a full commit")


def find_kubectl() -> str:
    """Path of ``kubectl``; refuse before writing anything when it is missing."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise LaunchRefused("kubectl is not on PATH; install it and set up access to Nautilus "
                            "(https://docs.nrp.ai/), or preview the Jobs with --dry-run")
    return kubectl


def run_preflight(jobs: list[JobSpec], config: CampaignConfig) -> None:
    """Ask protbench_nrp.preflight whether the bucket holds what the Jobs need."""
    try:
        preflight.preflight(jobs, config)
    except preflight.PreflightError as error:
        raise LaunchRefused(f"preflight failed: {error}") from None


def identity_line(config: CampaignConfig, verb: str, environ: dict[str, str] | None = None) -> str:
    """Whose Jobs these are and where they write, in one line: ``"{verb} as INITIALS=...: bucket ..."``.

    Says so when INITIALS, BUCKET or RCLONE_SECRET are still :data:`SHIPPED_DEFAULTS`
    (someone else's); the launch goes on, as a campaign of the seed's own would.
    """
    line = (f"{verb} as INITIALS={config.initials}: bucket s3://{config.bucket} (rclone remote "
            f"{config.rclone_remote}), rclone secret {config.rclone_secret}, namespace "
            f"{kube_namespace(environ)}")
    shipped = [name for name, (field, value) in SHIPPED_DEFAULTS.items() if getattr(config, field) == value]
    if shipped:
        names = shipped[0] if len(shipped) == 1 else f"{', '.join(shipped[:-1])} and {shipped[-1]}"
        line += (f" ({names} {'is the shipped default' if len(shipped) == 1 else 'are the shipped defaults'}, "
                 f"another person's: edit the constants at the top of run-umbrella-windows.py)")
    return line


def dry_run_summary(jobs: list[JobSpec], manifests: list[dict], config: CampaignConfig) -> list[str]:
    """What a dry run says on stderr after the manifests: why each environment repeats, whose
    campaign it is, one line per Job (name, stage, replica, window), and the total."""
    pod = manifests[0]["spec"]["template"]["spec"] if manifests else {}
    containers = [c.get("name", "?") for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])]
    lines = [
        f"note: the manifests repeat each Job's environment in each of its {len(containers)} containers "
        f"({', '.join(containers)}): Kubernetes has no pod-wide environment, and every container gets the "
        f"same one, so each sees the settings the Job was launched with",
        unpinned_note(config),
        identity_line(config, "Dry run"),
    ]
    earlier = [stage.name for stage in STAGE_TABLE[:STAGE_TABLE.index(stage_of(config.stage))]]
    if earlier:
        lines.append(f"note: {config.stage} Jobs start from what {' and '.join(earlier)} left in the bucket: "
                     f"launch those first ({', then '.join(f'--stage {name}' for name in earlier)}); a "
                     f"launch's preflight refuses Jobs whose inputs are not there")
    width = max([len(job.name) for job in jobs] + [len("Job")])
    lines.append(f"{'Job':<{width}}  {'stage':<7}  {'replica':<7}  window")
    for job in jobs:
        replica = "-" if job.replica is None else str(job.replica)
        window = "-" if job.window is None else window_tag(job.window)
        lines.append(f"{job.name:<{width}}  {job.stage:<7}  {replica:<7}  {window}")
    lines.append(f"{len(jobs)} Job{'' if len(jobs) == 1 else 's'} of {config.campaign.name} ({describe(jobs)}), "
                 f"their manifests on stdout; nothing was applied: run without --dry-run to launch")
    return lines


# -- submission --------------------------------------------------------------------------

def submit(jobs: list[JobSpec], manifests: list[dict], config: CampaignConfig, kubectl: Kubectl | str,
           replacing: dict[str, JobState] | None = None) -> int:
    """Write each manifest as provenance, then ``kubectl create -f`` that very file.

    A Job in ``replacing`` (from :func:`plan_replacements`) first has its old
    Job deleted, waited for until gone, and its provenance kept as
    ``NAME.attempt-K.yaml``. Stops at the first failure, or at Ctrl-C, which
    leaves no file that looks like a created run, and says which Jobs were
    and were not submitted.
    """
    if isinstance(kubectl, str):  # a path to kubectl
        kubectl = Kubectl(kubectl, timeout_s=KUBECTL_TIMEOUT_S)
    submitted: list[JobSpec] = []
    replacing = replacing or {}
    job = None
    try:
        for job, manifest in zip(jobs, manifests):
            path = config.local_result_dir / job.provenance_path
            if job.name in replacing:
                failure = replace_old(job, replacing[job.name], path, config,
                                      functools.partial(kubectl.delete, job.name))
                if failure:
                    return _report_partial(jobs, submitted, failure)
            try:
                write_new_file(path, to_yaml(manifest))
            except OSError as error:
                return _report_partial(jobs, submitted, f"could not write {path}: {error}")
            failure = _create(kubectl, path, job)
            if failure:
                kept = _mark_failed(path, failure)
                return _report_partial(jobs, submitted, f"{failure}\n  its manifest is kept as {kept}")
            submitted.append(job)
    except KeyboardInterrupt:
        failure = "interrupted (Ctrl-C)"
        if job is not None and job not in submitted:
            failure = (f"interrupted (Ctrl-C) while submitting {job.name}; that Job may or may not "
                       f"exist: check with kubectl get job {job.name}")
            path = config.local_result_dir / job.provenance_path
            if path.exists():  # written, maybe applied: it must not look like an applied run
                failure += f"\n  its manifest is kept as {_mark_failed(path, failure)}"
        return _report_partial(jobs, submitted, failure)
    click.echo(f"Submitted {len(submitted)} Jobs ({describe(submitted)}); provenance under "
               f"{config.local_result_dir / config.campaign.root}")
    return EXIT_OK


def replace_old(job: JobSpec, state: JobState, path: Path, config: CampaignConfig,
                delete) -> str | None:
    """Delete ``job``'s old Job (``delete()``, waiting until gone), then archive its provenance as
    ``NAME.attempt-K.yaml``; what failed, or ``None``.

    The delete comes first: when it fails or times out, nothing else has changed.
    """
    if state is not JobState.ABSENT:
        try:
            delete()
        except KubectlError as error:
            return f"{error}\n  nothing of {job.name} was changed (its provenance is as it was)"
        click.echo(f"deleted the old {state.value} Job {job.name}")
    if not path.exists():  # an earlier --relaunch archived it, then its create failed
        return None
    archived = len(attempt_paths(job, config)) + 1
    target = config.local_result_dir / config.campaign.manifest_attempt(job.stage, job.replica, job.window,
                                                                        archived)
    try:
        os.link(path, target)  # never replaces a file, unlike a rename
        path.unlink()
    except OSError as error:
        return f"could not keep {path} as {target}: {error}; the old Job {job.name} is deleted, no new one created"
    click.echo(f"kept the old provenance as {target}")
    return None


def _create(kubectl: Kubectl, path: Path, job: JobSpec) -> str | None:
    """Create the Job of one manifest file; ``None`` on success, else what went wrong."""
    try:
        answer = kubectl.create(path, job.name)
    except KubectlError as error:
        if "gave no answer" in str(error):
            return f"{error}; the Job may or may not exist: check with kubectl get job {job.name}"
        return str(error)
    click.echo(f"{answer}  [{path}]")
    return None


def _mark_failed(path: Path, failure: str) -> Path:
    """Move a manifest whose create failed to ``*.yaml.failed``, with the failure as a comment.

    An earlier failure of the same Job is kept: the new record becomes
    ``NAME.2.yaml.failed``, ``NAME.3.yaml.failed``, ... instead.
    """
    note = "".join(f"# {line}\n" for line in failure.splitlines())
    text = path.read_text(encoding="utf-8") + "# kubectl create did not succeed:\n" + note
    stem = path.name.removesuffix(".yaml")
    for number in itertools.count(1):
        failed = path.with_name(f"{path.name}.failed" if number == 1 else f"{stem}.{number}.yaml.failed")
        try:
            write_new_file(failed, text)
        except FileExistsError:
            continue
        path.unlink()
        return failed


def _report_partial(jobs: list[JobSpec], submitted: list[JobSpec], failure: str) -> int:
    rest = jobs[len(submitted):]  # Jobs are submitted in order and the first failure stops the launch
    click.echo(f"error: {failure}", err=True)
    click.echo(f"Submitted ({len(submitted)}): {describe(submitted)}", err=True)
    click.echo(f"Not submitted ({len(rest)}): {describe(rest)}", err=True)
    click.echo("Fix the problem and launch the Jobs not submitted (--replicas, --windows; with --relaunch "
               "for those replacing earlier Jobs); the provenance files of the submitted ones stop them "
               "being launched twice.", err=True)
    return EXIT_PARTLY_SUBMITTED


# -- the launch, top-down --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Prepared:
    """A launch once every check before its first side effect has passed (:func:`prepare`)."""

    config: CampaignConfig
    commit: str
    jobs: list[JobSpec]
    manifests: list[dict]
    remote: gitcheck.Remote
    kubectl: Kubectl


def prepare(config: CampaignConfig, settings: LaunchSettings, select=build_jobs, refuse=None,
            verb: str = "Launching") -> Prepared:
    """Every check of a launch, in order: constants, template, git HEAD, pinning, manifests (schema,
    NRP policy), the scripts committed and pushed, kubectl, preflight. Writes nothing.

    ``select(config, commit)`` gives the Jobs (default: the configured stage's);
    ``--follow`` passes every stage the selection needs. Preflight checks the
    inputs of the configured stage's Jobs only when ``select`` is the default;
    otherwise (later stages' inputs come from Jobs not yet run) that the bucket
    can be opened. ``refuse(jobs, config)``, when given, runs once the
    manifests are checked (a plain launch refuses existing provenance there).

    Raises
    ------
    LaunchRefused, TemplateError, GitCheckError
        When a check fails.
    """
    validate_config(config)
    click.echo(identity_line(config, verb), err=True)  # once the constants read, before any other check
    template = load_template(settings.template_path)
    commit = gitcheck.require_head_commit(settings.repo_dir)
    config = pin_software(config)
    jobs = select(config, commit)
    manifests = [render_manifest(job, config, template) for job in jobs]
    check_manifests(jobs, manifests, settings.template_path)
    if refuse is not None:
        refuse(jobs, config)
    remote = check_repository(config, settings.repo_dir, commit,
                              tuple(dict.fromkeys(job.stage for job in jobs)) or None)
    kubectl = Kubectl(find_kubectl(), timeout_s=KUBECTL_TIMEOUT_S)
    if settings.preflight:
        run_preflight(jobs if select is build_jobs else [], config)
    return Prepared(config, commit, jobs, manifests, remote, kubectl)


def launch(config: CampaignConfig, settings: LaunchSettings, *, dry_run: bool = False,
           relaunch: bool = False, extend: bool = False) -> int:
    """Check everything, then write and create one manifest per Job (or print them, for a dry run).

    ``relaunch`` replaces Failed or vanished Jobs with unfinished results;
    ``extend`` also Complete ones (see :func:`plan_replacements`).

    Raises
    ------
    LaunchRefused, TemplateError, GitCheckError
        When a check fails; nothing has been written or applied then.
    """
    replace = relaunch or extend
    if dry_run:
        validate_config(config)
        template = load_template(settings.template_path)
        commit = gitcheck.head_commit(settings.repo_dir) or gitcheck.NO_COMMIT
        jobs = build_jobs(config, commit)
        manifests = [render_manifest(job, config, template) for job in jobs]
        check_manifests(jobs, manifests, settings.template_path)
        click.echo(yaml_stream(manifests), nl=False)
        for line in dry_run_summary(jobs, manifests, config):
            click.echo(line, err=True)
        return EXIT_OK
    ready = prepare(config, settings, refuse=None if replace else refuse_existing_provenance,
                    verb="Replacing Jobs" if replace else "Launching")
    config, jobs, kubectl = ready.config, ready.jobs, ready.kubectl
    replacing = None
    if replace:
        replacing = plan_replacements(jobs, config, kubectl, results_reader(config, settings), extend)
    verb = "Replacing" if replace else "Launching"
    click.echo(f"{verb} {len(jobs)} Jobs of {config.campaign.name} at commit {ready.commit[:12]} "
               f"(pushed to {ready.remote.name}): {describe(jobs)}")
    return submit(jobs, ready.manifests, config, kubectl, replacing)
