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

Public pieces other parts build on: :func:`build_jobs` (the Jobs of a
campaign, shared with ``--local`` and ``--status``), :func:`render_manifest`
and :func:`main` (the command line).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path, PurePosixPath

import click

from . import gitcheck, pinning, policy, preflight, variables
from .cluster import JobState, Kubectl, KubectlError
from .errors import ProtbenchError
from .files import write_new_file
from .gitcheck import GitCheckError
from .jobs import STAGE_SCRIPTS, CampaignConfig, JobSpec
from .layout import STAGES, job_name, window_tag
from .manifest import (SchemaUnavailable, TemplateError, cuda_node_selector_terms, load_template,
                       render_manifest, schema_errors, to_yaml, yaml_stream)

__all__ = ["build_jobs", "render_manifest", "launch", "main", "validate_config", "LaunchRefused"]

#: Exit statuses of the command line.
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_PARTLY_SUBMITTED = 3

#: Longest wait for one ``kubectl create``.
KUBECTL_TIMEOUT_S = 300

#: Variables the Job template sets (``OE_LICENSE``: where the OpenEye license secret is
#: mounted) or the pod's commands take their mount points from; EXTRA_ENV may not set them.
TEMPLATE_ENV = ("OE_LICENSE", *variables.names("template"), "RCLONE_CONFIG")

#: Every variable the launcher sets itself; EXTRA_ENV may not redefine them.
LAUNCHER_ENV = variables.names("launcher")

_INITIALS = re.compile(r"^[A-Za-z]+$")
_CAMPAIGN_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RCLONE_REMOTE = re.compile(r"^[A-Za-z0-9_][-A-Za-z0-9_.+@ ]*$")


class LaunchRefused(ProtbenchError):
    """A check failed before anything was written or applied."""


class ConfigError(LaunchRefused):
    """The launcher's constants (or the options overriding them) make no valid campaign."""


@dataclass(frozen=True)
class LaunchSettings:
    """Where the launcher finds its repository and template, and whether preflight runs."""

    repo_dir: Path
    template_path: Path
    preflight: bool = True


# -- the constants -------------------------------------------------------------------

def config_problems(config: CampaignConfig) -> list[str]:
    """Every way ``config`` is unusable, each naming the constant and the fix."""
    problems = []
    if not isinstance(config.initials, str) or not _INITIALS.match(config.initials):
        problems.append(f"INITIALS {config.initials!r} must be your initials, letters only (e.g. 'jm'): "
                        f"every Job carries them so people know whom to contact")
    for constant, value in (("TARGET", config.target), ("FF", config.ff)):
        problem = campaign_name_check(constant, value)
        if problem:
            problems.append(problem)
    for constant, value in (("N_REPLICAS", config.n_replicas), ("N_WINDOWS", config.n_windows)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{constant} {value!r} must be a whole number of at least 1")
    if config.stage not in STAGES:
        problems.append(f"STAGE {config.stage!r} must be one of {', '.join(STAGES)}")
    problems += _selection_problems("REPLICAS (--replicas)", config.replicas, 1, config.n_replicas)
    problems += _selection_problems("WINDOWS (--windows)", config.windows, 0, config.n_windows - 1
                                    if isinstance(config.n_windows, int) else None)
    script = PurePosixPath(str(config.script_path))
    if not config.script_path or script.is_absolute() or ".." in script.parts:
        problems.append(f"SCRIPT_PATH {config.script_path!r} must be a path inside this repository, "
                        f"relative to its root (e.g. 'umbrella-scripts/run-umbrella-window.py')")
    try:
        cuda_node_selector_terms(str(config.cuda_version))
    except ValueError:
        problems.append(f"CUDA_VERSION {config.cuda_version!r} must be MAJOR.MINOR, e.g. '12.4', "
                        f"matching the Dockerfile's CUDA_VERSION")
    if not _BUCKET_NAME.match(str(config.bucket)):
        problems.append(f"BUCKET {config.bucket!r} is not an S3 bucket name (3-63 lower-case letters, "
                        f"digits, dots and hyphens)")
    if not _RCLONE_REMOTE.match(str(config.rclone_remote)):
        problems.append(f"RCLONE_REMOTE {config.rclone_remote!r} must be the name of a remote in the "
                        f"rclone config (e.g. 'nrp'), without ':'")
    for constant, value in (("RCLONE_SECRET", config.rclone_secret), ("OPENEYE_SECRET", config.openeye_secret)):
        if not _SECRET_NAME.match(str(value)) or len(str(value)) > 253:
            problems.append(f"{constant} {value!r} is not a Kubernetes secret name (lower-case letters, "
                            f"digits, '-' and '.'); see kubectl get secrets")
    for constant, value in (("IMAGE", config.image), ("REPO_URL", config.repo_url),
                            ("PROTEINBENCHMARK_REF", config.proteinbenchmark_ref)):
        if not isinstance(value, str) or not value or re.search(r"\s", value):
            problems.append(f"{constant} {value!r} must be set, without spaces")
    problems += _extra_env_problems(config.extra_env)
    if not problems:
        problems += _extra_env_value_problems(config)
    return problems


def campaign_name_check(constant: str, value) -> str | None:
    """Why ``value`` cannot be TARGET or FF (``constant``), or ``None`` when it can.

    Both become parts of file names, bucket paths and the patterns the pods
    copy by, so only letters, digits and ``. _ + -`` are allowed: a ``*``,
    ``[``, ``/``, space or ``$`` would match other files or break a command.
    """
    if isinstance(value, str) and _CAMPAIGN_NAME.match(value):
        return None
    bad = sorted(set(re.sub(r"[A-Za-z0-9._+-]", "", value))) if isinstance(value, str) else []
    which = f" (not {' '.join(repr(c) for c in bad)})" if bad else ""
    return (f"{constant} {value!r} must be a non-empty name of letters, digits and '.', '_', '+', '-' "
            f"only{which}: it becomes part of file names and of the file patterns the pods copy by, "
            f"where other characters would match other files or break the command")


def _selection_problems(what: str, selection, lowest: int, highest: int | None) -> list[str]:
    if selection is None or highest is None:
        return []
    items = list(selection)
    if not items:
        return [f"{what} selects nothing; use None (or 'all') for every one"]
    bad = [i for i in items if not isinstance(i, int) or isinstance(i, bool) or not lowest <= i <= highest]
    if bad:
        return [f"{what} selects {', '.join(map(repr, bad))}, outside {lowest}..{highest}"]
    if len(set(items)) != len(items):
        return [f"{what} names some more than once: {items}"]
    return []


def _extra_env_problems(extra_env) -> list[str]:
    if not isinstance(extra_env, dict):
        return [f"EXTRA_ENV must be a dict of variable names to strings, not {type(extra_env).__name__}"]
    problems = []
    for name, value in extra_env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            problems.append(f"EXTRA_ENV key {name!r} is not an environment variable name "
                            f"(letters, digits and '_', not starting with a digit)")
        elif name in LAUNCHER_ENV:
            problems.append(f"EXTRA_ENV sets {name}, which the launcher sets itself; remove it "
                            f"(use the matching constant or option instead)")
        elif name in TEMPLATE_ENV:
            why = ("k8s_template.yaml sets it to where the OpenEye license secret is mounted "
                   "(OPENEYE_SECRET chooses the license)" if name == "OE_LICENSE" else
                   "the pod's commands take a mount point of k8s_template.yaml from it")
            problems.append(f"EXTRA_ENV sets {name}, but {why}; remove it from EXTRA_ENV")
        elif name.startswith(variables.PREFIX):
            problem = variables.unknown_name_problem(name)
            if problem:
                problems.append(problem)
        if not isinstance(value, str):
            problems.append(f"EXTRA_ENV[{name!r}] is {value!r}; environment values must be strings, "
                            f"e.g. {str(value)!r}")
    return problems


def _extra_env_value_problems(config: CampaignConfig) -> list[str]:
    """What the stage's script would refuse in the environment of the first selected Job, in its words.

    EXTRA_ENV is the same in every Job of the launch and the launcher's own
    values are checked above, so the first Job stands for all of them.
    """
    replica, window = _slots(config)[0]
    env = job_env(config, config.stage, replica, window, gitcheck.NO_COMMIT)
    return [f"EXTRA_ENV: {problem}" for problem in variables.value_problems(env, (config.stage,))]


def validate_config(config: CampaignConfig) -> None:
    """Raise :class:`ConfigError` listing every problem of ``config``; return quietly when there is none."""
    problems = config_problems(config)
    if problems:
        raise ConfigError("the launcher's constants are not usable:\n  - " + "\n  - ".join(problems))


# -- the Jobs ------------------------------------------------------------------------------

def stage_script(config: CampaignConfig, stage: str) -> str:
    """The script a stage's pods run: SCRIPT_PATH for windows, jobs.STAGE_SCRIPTS otherwise."""
    return config.script_path if stage == "window" else STAGE_SCRIPTS[stage]


def _slots(config: CampaignConfig) -> list[tuple[int | None, int | None]]:
    """(replica, window) of every selected Job of the configured stage."""
    if config.stage == "setup":
        return [(None, None)]
    if config.stage == "steered":
        return [(replica, None) for replica in config.selected_replicas()]
    return [(replica, window) for replica in config.selected_replicas() for window in config.selected_windows()]


def job_env(config: CampaignConfig, stage: str, replica: int | None, window: int | None,
            commit: str) -> dict[str, str]:
    """Every variable a Job's containers receive, launcher-set first, then EXTRA_ENV."""
    campaign = config.campaign
    env = {"PROTBENCH_STAGE": stage, "PROTBENCH_TARGET": config.target, "PROTBENCH_FF": config.ff}
    if replica is not None:
        env["PROTBENCH_REPLICA"] = str(replica)
    if window is not None:
        env["PROTBENCH_WINDOW"] = window_tag(window)
    env.update({
        "PROTBENCH_N_WINDOWS": str(config.n_windows),
        "PROTBENCH_SCRIPT_COMMIT": commit,
        "PROTBENCH_SCRIPT_PATH": stage_script(config, stage),
        "PROTBENCH_REPO_URL": config.repo_url,
        "PROTBENCH_REQUIRED_FILES": "\n".join(
            campaign.required_files(stage, replica, window, n_windows=config.n_windows)),
        "PROTBENCH_OUTPUT_FILES": "\n".join(
            campaign.output_files(stage, replica, window, n_windows=config.n_windows)),
        "PROTBENCH_BUCKET": config.bucket,
        "PROTBENCH_RCLONE_REMOTE": config.rclone_remote,
        "PROTBENCH_PROTEINBENCHMARK_REF": config.proteinbenchmark_ref,
        "PROTBENCH_PROTEINBENCHMARK_REPO": config.proteinbenchmark_repo,
        # The pod cannot see which image it runs; its run record reads it from here.
        "PROTBENCH_IMAGE": config.image,
    })
    env.update(config.extra_env)
    return env


def build_jobs(config: CampaignConfig, commit: str) -> list[JobSpec]:
    """The Jobs of the configured stage and selection, in launch order.

    Parameters
    ----------
    config : CampaignConfig
        The launcher's constants.
    commit : str
        The commit the pods check out (``PROTBENCH_SCRIPT_COMMIT``).

    Raises
    ------
    ConfigError
        When ``config`` is unusable.
    """
    validate_config(config)
    jobs = []
    for replica, window in _slots(config):
        jobs.append(JobSpec(
            stage=config.stage, replica=replica, window=window,
            name=job_name(config.initials, config.target, config.ff, config.stage, replica, window),
            script_path=stage_script(config, config.stage),
            env=job_env(config, config.stage, replica, window, commit),
            provenance_path=config.campaign.manifest(config.stage, replica, window),
        ))
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):  # layout.job_name hashes lossy names; this guards that promise
        raise ConfigError(f"two Jobs would share a name ({sorted(n for n in names if names.count(n) > 1)[0]}); "
                          f"report this as a bug in layout.job_name")
    return jobs


def describe(jobs: list[JobSpec]) -> str:
    """``replica 1 windows 00-03, 07; replica 2 windows 00-30`` for a list of Jobs."""
    parts = []
    for (stage, replica), group in groupby(jobs, key=lambda job: (job.stage, job.replica)):
        group = list(group)
        if stage == "setup":
            parts.append("setup")
        elif stage == "steered":
            parts.append(f"replica {replica} steered MD")
        else:
            parts.append(f"replica {replica} windows {_ranges([job.window for job in group])}")
    return "; ".join(parts) or "none"


def _ranges(numbers: list[int]) -> str:
    spans, start = [], None
    for index, number in enumerate(numbers):
        if start is None:
            start = number
        if index + 1 == len(numbers) or numbers[index + 1] != number + 1:
            spans.append(window_tag(start) if start == number else f"{window_tag(start)}-{window_tag(number)}")
            start = None
    return ", ".join(spans)


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
    """Whether the results say ``job`` is finished; ``None`` when they cannot be read."""
    from .status import production_done

    if reading is None or reading.error:
        return None
    if job.stage == "window":
        return reading.progress is not None and production_done(reading.progress)
    return reading.product_present


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
    from .status import campaign_selector, read_all_progress

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
                            f"PROTBENCH_PRODUCTION_LENGTH in EXTRA_ENV)")
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


def check_repository(config: CampaignConfig, repo_dir: Path, commit: str) -> gitcheck.Remote:
    """What the pods check out is what is here, and they can get it.

    The stage's script is committed as it is on disk and executable, nothing
    under ``umbrella-scripts/`` (the library and pod scripts) differs from the
    commit, and the commit is on the remote whose URL is ``REPO_URL``.
    """
    script = stage_script(config, config.stage)
    gitcheck.check_script_committed(repo_dir, script)
    gitcheck.check_tree_committed(repo_dir)
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
                failure = _replace_old(job, replacing[job.name], path, config, kubectl)
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


def _replace_old(job: JobSpec, state: JobState, path: Path, config: CampaignConfig,
                 kubectl: Kubectl) -> str | None:
    """Delete ``job``'s old Job (waiting until gone), then archive its provenance; what failed, or ``None``.

    The delete comes first: when it fails or times out, nothing else has changed.
    """
    if state is not JobState.ABSENT:
        try:
            kubectl.delete(job.name)
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
    validate_config(config)
    template = load_template(settings.template_path)
    if dry_run:
        commit = gitcheck.head_commit(settings.repo_dir) or gitcheck.NO_COMMIT
    else:
        commit = gitcheck.require_head_commit(settings.repo_dir)
        config = pin_software(config)
    jobs = build_jobs(config, commit)
    manifests = [render_manifest(job, config, template) for job in jobs]
    check_manifests(jobs, manifests, settings.template_path)
    if dry_run:
        click.echo(yaml_stream(manifests), nl=False)
        click.echo(unpinned_note(config), err=True)
        return EXIT_OK
    replace = relaunch or extend
    if not replace:
        refuse_existing_provenance(jobs, config)
    remote = check_repository(config, settings.repo_dir, commit)
    kubectl = Kubectl(find_kubectl(), timeout_s=KUBECTL_TIMEOUT_S)
    if settings.preflight:
        run_preflight(jobs, config)
    replacing = None
    if replace:
        replacing = plan_replacements(jobs, config, kubectl, results_reader(config, settings), extend)
    verb = "Replacing" if replace else "Launching"
    click.echo(f"{verb} {len(jobs)} Jobs of {config.campaign.name} at commit {commit[:12]} "
               f"(pushed to {remote.name}): {describe(jobs)}")
    return submit(jobs, manifests, config, kubectl, replacing)


def jobs_for_this_machine(config: CampaignConfig, settings: LaunchSettings) -> list[JobSpec]:
    """The selected Jobs for ``--local`` and ``--status``: no cluster, so no pushed-commit check."""
    return build_jobs(config, gitcheck.head_commit(settings.repo_dir) or gitcheck.NO_COMMIT)


# -- the command line --------------------------------------------------------------------

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
@click.option("--status", "status", is_flag=True, help="Show how far the selected Jobs have got.")
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
                   "(a longer PROTBENCH_PRODUCTION_LENGTH in EXTRA_ENV).")
@click.pass_obj
def cli(obj, dry_run, stage, replicas, windows, skip_preflight, local_run, max_parallel, demo, status,
        status_source, no_kubectl, relaunch, extend):
    """Launch one Kubernetes Job per selected replica and window (see README.md)."""
    config, settings = obj
    if sum((dry_run, local_run, status)) > 1:
        raise click.UsageError("choose one of --dry-run, --local and --status")
    if (relaunch or extend) and (local_run or status or demo):
        raise click.UsageError("--relaunch and --extend replace cluster Jobs: not with --local, --status or --demo")
    if demo and not (dry_run or local_run or status):
        # The demo's lengths are minutes of CPU time: never a cluster campaign.
        raise click.UsageError("--demo runs on this machine: add --local (or --dry-run, --status)")
    if demo or local_run:
        from . import local  # only these modes need it; a cluster launch stays quick to start
    if demo:
        config = local.demo_config(config)
    changes = {"stage": stage} if stage else {}
    if replicas is not None:
        changes["replicas"] = parse_selection(replicas, "--replicas")
    if windows is not None:
        changes["windows"] = parse_selection(windows, "--windows")
    config = dataclasses.replace(config, **changes)
    if skip_preflight:
        settings = dataclasses.replace(settings, preflight=False)
    try:
        if local_run:
            code = local.run_local(jobs_for_this_machine(config, settings), config, max_parallel=max_parallel)
        elif status:
            from .status import show_status

            code = show_status(jobs_for_this_machine(config, settings), config,
                               use_kubectl=not no_kubectl, source=status_source)
        else:
            code = launch(config, settings, dry_run=dry_run, relaunch=relaunch, extend=extend)
    except (LaunchRefused, TemplateError, GitCheckError) as error:
        click.echo(f"refused: {error}", err=True)
        click.echo("Nothing was applied.", err=True)
        code = EXIT_REFUSED
    raise SystemExit(code)


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
