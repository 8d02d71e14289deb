"""What a campaign is made of: its settings and the Jobs they expand to.

:class:`CampaignConfig` carries the SHOUTING_CASE constants of
``run-umbrella-windows.py``; :class:`JobSpec` is one Job of it (setup, the
steered MD of a replica, or one umbrella window) with the exact environment
every container of that Job receives. The cluster launch renders a JobSpec
into a manifest; ``--local`` runs the same script with the same environment.

:func:`validate_config` (from :func:`config_problems`) refuses unusable
constants, each problem naming the constant and the fix, EXTRA_ENV's names and
values included; :func:`build_jobs` expands valid constants into the Jobs of
the configured stage and selection, each with its :func:`job_env`. Nothing here
talks to Kubernetes, so ``--local`` and ``--status`` plan with this module alone.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path, PurePosixPath

from . import gitcheck, variables
from .errors import ProtbenchError
from .layout import STAGES, Campaign, JobId, job_name, window_tag
from .stages import STAGE_TABLE, stage_of

#: The script of each stage no launcher constant chooses (windows: SCRIPT_PATH), relative to the
#: repository root; read from :data:`protbench_nrp.stages.STAGE_TABLE`.
STAGE_SCRIPTS = {stage.name: stage.script for stage in STAGE_TABLE if stage.script_setting is None}

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
#: CUDA_VERSION as the Dockerfile and the node labels give it.
CUDA_VERSION_FORMAT = re.compile(r"^(\d+)\.(\d+)$")


#: Exit statuses of the command line (``run-umbrella-windows.py``): here, not in the launcher, so
#: that the command line knows them without importing the Kubernetes side for ``--local``.
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_PARTLY_SUBMITTED = 3
#: ``--follow`` stopped because nothing more could progress (a Job failed for good, or is blocked).
EXIT_STOPPED = 4


@dataclass(frozen=True)
class LaunchSettings:
    """Where the launcher finds its repository and template, and whether preflight runs."""

    repo_dir: Path
    template_path: Path
    preflight: bool = True


# The launch's refusals live here, beside the checks that raise them, so that the
# launcher and --local share them without either importing the other.
class LaunchRefused(ProtbenchError):
    """A check failed before anything was written or applied."""


class ConfigError(LaunchRefused):
    """The launcher's constants (or the options overriding them) make no valid campaign."""


@dataclass(frozen=True)
class CampaignConfig:
    """The launcher's constants, gathered so every part reads the same values."""

    initials: str
    target: str
    ff: str
    n_replicas: int
    n_windows: int
    script_path: str = stage_of("window").script  # SCRIPT_PATH: the window script unless you name another
    local_result_dir: Path = Path("results")
    stage: str = "window"
    replicas: tuple[int, ...] | None = None   # None: 1..n_replicas
    windows: tuple[int, ...] | None = None    # None: 0..n_windows-1
    bucket: str = ""
    rclone_remote: str = ""
    rclone_secret: str = ""
    openeye_secret: str = ""
    image: str = ""
    repo_url: str = ""
    proteinbenchmark_ref: str = ""
    proteinbenchmark_repo: str = ""
    cuda_version: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    #: What a launch resolved IMAGE and PROTEINBENCHMARK_REF to (pinning.PinnedSoftware);
    #: None for a dry run, --local and --status, which ask no registry.
    pinned: object = None

    @property
    def campaign(self) -> Campaign:
        return Campaign(self.target, self.ff)

    def selected_replicas(self) -> tuple[int, ...]:
        return self.replicas if self.replicas is not None else tuple(range(1, self.n_replicas + 1))

    def selected_windows(self) -> tuple[int, ...]:
        return self.windows if self.windows is not None else tuple(range(self.n_windows))


@dataclass(frozen=True)
class JobSpec:
    """One Job of a campaign.

    Attributes
    ----------
    stage : str
        ``"setup"``, ``"steered"`` or ``"window"``.
    replica, window : int or None
        Which replica/window; ``None`` where the stage has none. Together
        they are :attr:`id`, checked when the JobSpec is built: a JobSpec of
        a Job that cannot exist (a setup of replica 2) raises ``ValueError``.
    name : str
        The Kubernetes Job name (from :func:`layout.job_name`).
    script_path : str
        Script run in the container, relative to the repository root.
    env : dict
        Every ``PROTBENCH_*`` (and ``EXTRA_ENV``) variable the containers get.
    provenance_path : PurePosixPath
        Where the applied manifest is kept, relative to the results root.
    """

    stage: str
    replica: int | None
    window: int | None
    name: str
    script_path: str
    env: dict[str, str]
    provenance_path: PurePosixPath

    def __post_init__(self):
        # JobId checks the identity (and normalises integral numbers); keep what it made.
        identity = JobId(self.stage, self.replica, self.window)
        object.__setattr__(self, "replica", identity.replica)
        object.__setattr__(self, "window", identity.window)

    @property
    def id(self) -> JobId:
        """Which Job this is: stage, replica and window as one checked value."""
        return JobId(self.stage, self.replica, self.window)


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
    if not CUDA_VERSION_FORMAT.match(str(config.cuda_version)):
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
    return [f"{_culprit(problem, config)}: {problem}" for problem in variables.value_problems(env, (config.stage,))]


#: Constants the launcher turns into a variable a script checks, so the script's words name the variable.
_CONSTANT_OF_VARIABLE = {"PROTBENCH_N_WINDOWS": "N_WINDOWS", "PROTBENCH_TARGET": "TARGET", "PROTBENCH_FF": "FF"}


def _culprit(problem: str, config: CampaignConfig) -> str:
    """What the user set that a script's ``problem`` is about: EXTRA_ENV, or the constant behind a variable."""
    if any(name in problem for name in config.extra_env):
        return "EXTRA_ENV"
    named = {name: constant for name, constant in _CONSTANT_OF_VARIABLE.items() if name in problem}
    if not named:
        return "EXTRA_ENV"
    return f"{', '.join(named.values())} (the launcher passes it as {', '.join(named)})"


def validate_config(config: CampaignConfig) -> None:
    """Raise :class:`ConfigError` listing every problem of ``config``; return quietly when there is none."""
    problems = config_problems(config)
    if problems:
        raise ConfigError("the launcher's constants are not usable:\n  - " + "\n  - ".join(problems))


# -- the Jobs ------------------------------------------------------------------------------

def stage_script(config: CampaignConfig, stage: str) -> str:
    """The script a stage's pods run: its row of the stage table, or SCRIPT_PATH where that row says so."""
    return stage_of(stage).script_for(config.script_path)


def _slots(config: CampaignConfig) -> list[tuple[int | None, int | None]]:
    """(replica, window) of every selected Job of the configured stage."""
    identity = stage_of(config.stage).identity
    replicas = config.selected_replicas() if "replica" in identity else (None,)
    windows = config.selected_windows() if "window" in identity else (None,)
    return [(replica, window) for replica in replicas for window in windows]


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
        identity = JobId(config.stage, replica, window)
        jobs.append(JobSpec(
            stage=config.stage, replica=replica, window=window,
            name=job_name(config.initials, config.target, config.ff, identity),
            script_path=stage_script(config, config.stage),
            env=job_env(config, config.stage, replica, window, commit),
            provenance_path=config.campaign.manifest(identity),
        ))
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):  # layout.job_name hashes lossy names; this guards that promise
        raise ConfigError(f"two Jobs would share a name ({sorted(n for n in names if names.count(n) > 1)[0]}); "
                          f"report this as a bug in layout.job_name")
    return jobs


def campaign_jobs(jobs: list[JobSpec], config: CampaignConfig) -> list[JobSpec]:
    """``jobs`` preceded by the Jobs of every earlier stage they need, in stage order.

    Earlier stages are built by :func:`build_jobs` from
    the same ``config`` (and so the same checks and environment), for the
    replicas ``jobs`` use.
    """
    if not jobs:
        return []
    commit = jobs[0].env.get("PROTBENCH_SCRIPT_COMMIT", "")
    stage = stage_of(jobs[0].stage)
    replicas = tuple(sorted({job.replica for job in jobs if job.replica is not None}))
    earlier = []
    for previous in STAGE_TABLE[: STAGE_TABLE.index(stage)]:
        earlier += build_jobs(dataclasses.replace(config, stage=previous.name,
                                                  replicas=replicas or None), commit)
    return earlier + list(jobs)


def describe(jobs: list[JobSpec]) -> str:
    """``replica 1 windows 00-03, 07; replica 2 windows 00-30`` for a list of Jobs."""
    parts = []
    for _, group in groupby(jobs, key=lambda job: (job.stage, job.replica)):
        group = list(group)
        if group[0].window is None:  # one Job per (stage, replica): it says itself what it is
            parts.append(group[0].id.describe())
        else:
            parts.append(f"replica {group[0].replica} windows {_ranges([job.window for job in group])}")
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


def jobs_for_this_machine(config: CampaignConfig, repo_dir: Path) -> list[JobSpec]:
    """The selected Jobs for ``--local`` and ``--status``: no cluster, so no pushed-commit check.

    ``repo_dir`` is the launcher's repository; its HEAD (if any) becomes the Jobs' commit.
    """
    return build_jobs(config, gitcheck.head_commit(repo_dir) or gitcheck.NO_COMMIT)
