"""The results layout and the naming of Jobs: the one place that knows them.

Every path below the results root (``/results`` in a pod, ``LOCAL_RESULT_DIR``
on a workstation, ``results/`` in the S3 bucket) and every Kubernetes Job name
is built here. Scripts, the launcher, the pod data flow, status and analysis
all ask this module, so a layout change is made once.

Paths are returned as :class:`~pathlib.PurePosixPath` objects *relative to the
results root*, because the same relative path is a file in a pod, a file on a
workstation and a key in the bucket. Use :meth:`Campaign.local` or
``root / path`` to turn one into a real file.

The layout, with ``S = {target}-{ff}``::

    S/setup/S-umbrella-openmm-system.xml      setup stage
    S/setup/S-minimized.pdb
    S/setup/S-native-contacts.dat
    S/setup/S-setup.yaml                      provenance of the setup Job
    S/replica-{R}/S-equilibration-1.xml       steered-MD stage (replica R)
    S/replica-{R}/S-window-{WW}.pdb
    S/replica-{R}/steered-md/...              steered-MD work files
    S/replica-{R}/S-{R}-steered.yaml          provenance of the steered-MD Job
    S/replica-{R}/S-{R}-{WW}.yaml             provenance of a window Job
    S/replica-{R}/S-{R}-{WW}.attempt-{K}.yaml earlier attempts, kept by --relaunch
    S/replica-{R}/window-{WW}/...             a window's outputs
    <a Job's output directory>/run-records/POD.json   one run record per pod
    S/analysis/...                            PMF and plots
    S/S-follow-journal.jsonl                  what --follow did, one JSON line per action
    comparison/A_vs_B-...                     campaigns A, B, ... side by side
"""

from __future__ import annotations

import hashlib
import numbers
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable

#: The three kinds of Job a campaign is made of, in the order they must run.
STAGES = ("setup", "steered", "window")

#: Where the results root lies in the bucket: ``{remote}:{bucket}/results/<layout path>``.
#: (The pod scripts, in shell, spell it out too.)
BUCKET_PREFIX = "results"

#: Prefix of every label and annotation the launcher puts on a Job.
LABEL_PREFIX = "protbench.openforcefield.org"

#: Starts the line of a --local Job's log (:meth:`Campaign.job_log`) naming the launcher command
#: that ran it (``./run-umbrella-windows.py --demo --local``), so advice can name one that works there.
JOB_LOG_LAUNCHER = "# launcher: "

_DNS_LABEL_MAX = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def comparison_file(campaigns, suffix: str) -> PurePosixPath:
    """``comparison/{S1}_vs_{S2}...-{suffix}``: several campaigns analysed side by side."""
    names = "_vs_".join(c.name for c in campaigns)
    return PurePosixPath("comparison") / f"{names}-{suffix}"


def window_tag(window: int) -> str:
    """Return the two-digit form of a window index (``7`` -> ``"07"``)."""
    if window < 0:
        raise ValueError(f"window index must be >= 0, got {window}")
    return f"{window:02d}"


@dataclass(frozen=True)
class JobId:
    """Which Job of a campaign: its stage and, where the stage has them, replica and window.

    Checked when built, so a Job that cannot exist (a setup of replica 2, a
    window without a replica) is refused where it is made, not when a path
    or a name is built from it.

    Parameters
    ----------
    stage : str
        One of :data:`STAGES`.
    replica : int or None
        From 1; steered MD and windows have one, setup (shared by every replica) none.
    window : int or None
        From 0; only a window Job has one.

    Raises
    ------
    ValueError
        Naming the field at fault and what it should be.
    """

    stage: str
    replica: int | None = None
    window: int | None = None

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; expected one of {', '.join(STAGES)}")
        for field, number in (("replica", self.replica), ("window", self.window)):
            if number is not None and (isinstance(number, bool) or not isinstance(number, numbers.Integral)):
                raise ValueError(f"{field} must be a whole number or None, got {number!r} "
                                 f"({type(number).__name__})")
            if number is not None:
                object.__setattr__(self, field, int(number))
        has = {"replica": self.replica is not None, "window": self.window is not None}
        for field in ("replica", "window"):
            needed = field in _STAGE_PATHS[self.stage].identity
            if needed and not has[field]:
                raise ValueError(f"a {self.stage} Job needs a {field} ({_FIELD_RANGES[field]}); got None")
            if has[field] and not needed:
                raise ValueError(f"a {self.stage} Job has no {field} (got {field}={getattr(self, field)!r}): "
                                 f"{_NO_FIELD_WHY[self.stage, field]}; leave {field} None")
        if self.replica is not None and self.replica < 1:
            raise ValueError(f"replicas are numbered from 1, got replica={self.replica}")
        if self.window is not None and self.window < 0:
            raise ValueError(f"window index must be >= 0, got window={self.window}")

    @classmethod
    def of(cls, stage: "str | JobId", replica: int | None = None, window: int | None = None) -> "JobId":
        """``stage`` itself when it is a JobId, else ``JobId(stage, replica, window)``."""
        if isinstance(stage, JobId):
            if replica is not None or window is not None:
                raise ValueError(f"give either a JobId ({stage}) or stage, replica and window, not both")
            return stage
        return cls(stage, replica, window)

    def describe(self) -> str:
        """``setup``, ``replica 2 steered MD`` or ``replica 1 window 07``, as messages say it."""
        return _STAGE_PATHS[self.stage].describe(self)

    def __str__(self) -> str:
        return self.describe()


_FIELD_RANGES = {"replica": "numbered from 1", "window": "an index from 0"}
_NO_FIELD_WHY = {
    ("setup", "replica"): "setup is shared by every replica",
    ("setup", "window"): "setup is shared by every window",
    ("steered", "window"): "steered MD of a replica saves the structures of all its windows",
}


@dataclass(frozen=True)
class Campaign:
    """The results tree of one target simulated with one force field.

    Parameters
    ----------
    target : str
        Benchmark target name, e.g. ``"gb3"`` or ``"villin"``.
    ff : str
        Force field name, e.g. ``"null-0.0.3-pair-opc3"``.
    """

    target: str
    ff: str

    def __post_init__(self):
        for field, value in (("target", self.target), ("ff", self.ff)):
            if not value or "/" in value or value.strip() != value:
                raise ValueError(
                    f"{field} {value!r} cannot name a results directory: use a "
                    f"non-empty name without '/' or surrounding spaces"
                )

    # -- names ------------------------------------------------------------
    @property
    def name(self) -> str:
        """``{target}-{ff}``: the directory and file prefix of the campaign."""
        return f"{self.target}-{self.ff}"

    @property
    def root(self) -> PurePosixPath:
        return PurePosixPath(self.name)

    def _file(self, directory: PurePosixPath, suffix: str) -> PurePosixPath:
        return directory / f"{self.name}-{suffix}"

    # -- setup stage --------------------------------------------------------
    @property
    def setup_dir(self) -> PurePosixPath:
        return self.root / "setup"

    @property
    def system_xml(self) -> PurePosixPath:
        """Serialized OpenMM System holding the umbrella ``CustomCVForce``."""
        return self._file(self.setup_dir, "umbrella-openmm-system.xml")

    @property
    def minimized_pdb(self) -> PurePosixPath:
        return self._file(self.setup_dir, "minimized.pdb")

    @property
    def contacts_file(self) -> PurePosixPath:
        """Native contacts: one ``atom_i atom_j r0_nm`` line per contact."""
        return self._file(self.setup_dir, "native-contacts.dat")

    # -- steered-MD stage ---------------------------------------------------
    def replica_dir(self, replica: int) -> PurePosixPath:
        if replica < 1:
            raise ValueError(f"replicas are numbered from 1, got {replica}")
        return self.root / f"replica-{replica}"

    def steered_state(self, replica: int) -> PurePosixPath:
        """The steered-MD equilibrated state (box vectors for every window)."""
        return self._file(self.replica_dir(replica), "equilibration-1.xml")

    def window_pdb(self, replica: int, window: int) -> PurePosixPath:
        """The starting structure of a window, saved by steered MD."""
        return self._file(self.replica_dir(replica), f"window-{window_tag(window)}.pdb")

    def steered_dir(self, replica: int) -> PurePosixPath:
        """Work files of steered MD (trajectories, checkpoints, logs)."""
        return self.replica_dir(replica) / "steered-md"

    def steered_files(self, replica: int) -> "SteeredFiles":
        return SteeredFiles(self, replica)

    # -- window stage -------------------------------------------------------
    def window_dir(self, replica: int, window: int) -> PurePosixPath:
        return self.replica_dir(replica) / f"window-{window_tag(window)}"

    def window_files(self, replica: int, window: int) -> "WindowFiles":
        return WindowFiles(self, replica, window)

    # -- analysis -------------------------------------------------------------
    @property
    def analysis_dir(self) -> PurePosixPath:
        return self.root / "analysis"

    @property
    def pmf_csv(self) -> PurePosixPath:
        return self._file(self.analysis_dir, "pmf.csv")

    def analysis_file(self, suffix: str) -> PurePosixPath:
        """``S/analysis/S-{suffix}``, e.g. ``analysis_file("pmf.png")``."""
        return self._file(self.analysis_dir, suffix)

    # -- following ------------------------------------------------------------
    @property
    def follow_journal(self) -> PurePosixPath:
        """``S/S-follow-journal.jsonl``: what ``--follow`` did, one JSON object a line."""
        return self._file(self.root, "follow-journal.jsonl")

    @property
    def follow_lock(self) -> PurePosixPath:
        """``S/.follow.lock``: followers of one results tree take turns holding it for a pass."""
        return self.root / ".follow.lock"

    # -- provenance -----------------------------------------------------------
    # Each method below takes a JobId, or its stage, replica and window as three
    # arguments; the per-stage answers are the rows of _STAGE_PATHS.
    def manifest(self, stage: "str | JobId", replica: int | None = None,
                 window: int | None = None) -> PurePosixPath:
        """Where the provenance manifest of a Job is kept.

        A window Job's is ``S/replica-{R}/S-{R}-{WW}.yaml``, as in the seed.
        """
        job = JobId.of(stage, replica, window)
        return _STAGE_PATHS[job.stage].manifest(self, job)

    def manifest_attempt(self, stage: "str | JobId", replica: int | None = None, window: int | None = None,
                         attempt: int = 1) -> PurePosixPath:
        """An earlier attempt's provenance, kept when ``--relaunch`` replaced its Job.

        ``NAME.attempt-K.yaml`` beside ``NAME.yaml`` (:meth:`manifest`), K from 1.
        """
        if attempt < 1:
            raise ValueError(f"attempts are numbered from 1, got {attempt}")
        current = self.manifest(stage, replica, window)
        return current.with_name(f"{current.stem}.attempt-{attempt}.yaml")

    def job_log(self, stage: "str | JobId", replica: int | None = None,
                window: int | None = None) -> PurePosixPath:
        """Console output of a Job run by ``--local``, kept beside the Job's outputs."""
        job = JobId.of(stage, replica, window)
        return _STAGE_PATHS[job.stage].job_log(self, job)

    # -- run records ------------------------------------------------------------
    def output_dir(self, stage: "str | JobId", replica: int | None = None,
                   window: int | None = None) -> PurePosixPath:
        """The directory a Job's pods write their own outputs to (and upload)."""
        job = JobId.of(stage, replica, window)
        return _STAGE_PATHS[job.stage].output_dir(self, job)

    def run_records_dir(self, stage: "str | JobId", replica: int | None = None,
                        window: int | None = None) -> PurePosixPath:
        """Where the run records of a Job's pods lie: one JSON per pod, inside its outputs."""
        return self.output_dir(stage, replica, window) / "run-records"

    def run_record(self, stage: "str | JobId", replica: int | None, window: int | None,
                   pod: str) -> PurePosixPath:
        """The run record of pod ``pod`` (its Kubernetes name, a DNS label) of a Job."""
        if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", pod or ""):
            raise ValueError(f"pod name {pod!r} cannot name a run record: expected a Kubernetes pod name")
        return self.run_records_dir(stage, replica, window) / f"{pod}.json"

    def progress_file(self, stage: "str | JobId", replica: int | None = None,
                      window: int | None = None) -> PurePosixPath | None:
        """The progress record a Job's script rewrites as it runs; ``None`` for setup, which keeps none."""
        job = JobId.of(stage, replica, window)
        return _STAGE_PATHS[job.stage].progress(self, job)

    # -- what a Job reads and writes -------------------------------------------
    def stage_inputs(self, stage: "str | JobId", replica: int | None = None,
                     window: int | None = None) -> list[tuple[str, str]]:
        """What a Job reads that an earlier stage writes, each with the stage that writes it.

        These must be in the bucket before the Job is applied (the launcher's
        preflight checks them). Directories end in ``/``.
        """
        job = JobId.of(stage, replica, window)
        return _STAGE_PATHS[job.stage].inputs(self, job)

    def required_files(self, stage: "str | JobId", replica: int | None = None, window: int | None = None,
                       n_windows: int | None = None) -> list[str]:
        """Entries a pod copies from the bucket before it starts.

        Its inputs (:meth:`stage_inputs`) and its own earlier outputs
        (:meth:`output_files`), so that a restarted pod resumes; those are
        absent for the first pod, which the copy step tolerates. A restarted
        steered-MD pod needs the window structures already saved (give
        ``n_windows``): the pull resumes past their crossings and would not
        save them again.
        """
        job = JobId.of(stage, replica, window)
        return ([path for path, _producer in self.stage_inputs(job)]
                + self.output_files(job, n_windows=n_windows))

    def output_files(self, stage: "str | JobId", replica: int | None = None, window: int | None = None,
                     n_windows: int | None = None) -> list[str]:
        """Entries a pod uploads to the bucket: its own outputs and nothing else."""
        job = JobId.of(stage, replica, window)
        return _STAGE_PATHS[job.stage].outputs(self, job, n_windows or 0)


@dataclass(frozen=True)
class NamedAnalysis:
    """The outputs of an analysis of windows read from a metadata file: ``{name}-{suffix}`` in one directory.

    The directory is the one given with ``-o``; every path here is relative
    to it, with the same suffixes as a campaign's ``S/analysis/S-{suffix}``.
    """

    name: str

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name.strip() != self.name or self.name.startswith("."):
            raise ValueError(f"--name {self.name!r} cannot name output files: use a non-empty name "
                             f"without '/', a leading '.' or surrounding spaces")

    @property
    def analysis_dir(self) -> PurePosixPath:
        return PurePosixPath(".")

    @property
    def pmf_csv(self) -> PurePosixPath:
        return self.analysis_file("pmf.csv")

    def analysis_file(self, suffix: str) -> PurePosixPath:
        """``{name}-{suffix}``, e.g. ``analysis_file("pmf.png")``."""
        return PurePosixPath(f"{self.name}-{suffix}")


@dataclass(frozen=True)
class WindowFiles:
    """Every file of one umbrella window, relative to the results root."""

    campaign: Campaign
    replica: int
    window: int

    @property
    def directory(self) -> PurePosixPath:
        return self.campaign.window_dir(self.replica, self.window)

    def _file(self, suffix: str) -> PurePosixPath:
        return self.directory / f"{self.campaign.name}-{suffix}"

    # inputs
    @property
    def system_xml(self) -> PurePosixPath:
        return self.campaign.system_xml

    @property
    def start_pdb(self) -> PurePosixPath:
        return self.campaign.window_pdb(self.replica, self.window)

    @property
    def steered_state(self) -> PurePosixPath:
        return self.campaign.steered_state(self.replica)

    # equilibration
    def equilibration(self, ext: str) -> PurePosixPath:
        """``S-equilibration.{dcd,out,chk}``."""
        return self._file(f"equilibration.{ext}")

    @property
    def equilibration_portable(self) -> PurePosixPath:
        """Platform-independent State XML beside equilibration's checkpoint (any GPU resumes it)."""
        return self._file("equilibration-checkpoint.xml")

    @property
    def equilibrated_state(self) -> PurePosixPath:
        """Final state of equilibration; its presence means equilibration is done."""
        return self._file("equilibration-1.xml")

    # production
    def production(self, ext: str) -> PurePosixPath:
        """``S-production.{out,chk}`` (the trajectory is segmented, see below)."""
        return self._file(f"production.{ext}")

    def production_segment(self, index: int) -> PurePosixPath:
        """One piece of the production trajectory.

        The trajectory is cut into one DCD per checkpoint interval so that a
        sync uploads each finished piece once instead of the whole growing
        file every time. Read them in index order for the full trajectory.
        """
        return self._file(f"production-segment-{index:04d}.dcd")

    @property
    def production_segment_glob(self) -> str:
        return f"{self.campaign.name}-production-segment-*.dcd"

    def saved_state(self, n: int) -> PurePosixPath:
        """``S-production-{n}.xml``: the n-th periodically saved portable state."""
        return self._file(f"production-{n}.xml")

    @property
    def portable_checkpoint(self) -> PurePosixPath:
        """Platform-independent State XML written beside every checkpoint."""
        return self._file("production-checkpoint.xml")

    @property
    def cv_timeseries(self) -> PurePosixPath:
        """``#"Step" "CV"`` then one ``step value`` line per production frame."""
        return self._file("production-fraction-native-contacts.dat")

    @property
    def parameters(self) -> PurePosixPath:
        """Umbrella parameters of the window, read by analysis (JSON)."""
        return self._file("umbrella-parameters.json")

    @property
    def progress(self) -> PurePosixPath:
        """Progress record refreshed every frame, read by status tools (JSON)."""
        return self._file("progress.json")


@dataclass(frozen=True)
class SteeredFiles:
    """Work files of one replica's steered MD, all under :meth:`Campaign.steered_dir`.

    Its products, the equilibrated state and the window structures, live in
    the replica directory (:meth:`Campaign.steered_state`,
    :meth:`Campaign.window_pdb`).
    """

    campaign: Campaign
    replica: int

    @property
    def directory(self) -> PurePosixPath:
        return self.campaign.steered_dir(self.replica)

    def _file(self, suffix: str) -> PurePosixPath:
        return self.directory / f"{self.campaign.name}-{suffix}"

    def equilibration(self, ext: str) -> PurePosixPath:
        """``S-equilibration.{out,chk}``."""
        return self._file(f"equilibration.{ext}")

    @property
    def equilibration_portable(self) -> PurePosixPath:
        return self._file("equilibration-checkpoint.xml")

    def pull(self, ext: str) -> PurePosixPath:
        """``S-pull.{out,chk}``: state data and checkpoint of the pull."""
        return self._file(f"pull.{ext}")

    @property
    def pull_portable(self) -> PurePosixPath:
        return self._file("pull-checkpoint.xml")

    @property
    def cv_timeseries(self) -> PurePosixPath:
        """``#"Step" "CV"`` then one ``step value`` line per pull frame."""
        return self._file("pull-fraction-native-contacts.dat")

    @property
    def progress(self) -> PurePosixPath:
        """Progress record of the running phase (JSON), read by status tools."""
        return self._file("progress.json")


# -- the layout of each stage's Job ------------------------------------------------

@dataclass(frozen=True)
class _StagePaths:
    """Who one stage's Job is and where it keeps each kind of file: one row per stage.

    Read by :class:`JobId` and :class:`Campaign`; :mod:`protbench_nrp.stages`
    adds the scripts and the completion checks.
    """

    #: Which of ``replica`` and ``window`` a Job of the stage has.
    identity: tuple[str, ...]
    #: The Job as messages name it.
    describe: Callable[[JobId], str]
    output_dir: Callable[[Campaign, JobId], PurePosixPath]
    manifest: Callable[[Campaign, JobId], PurePosixPath]
    job_log: Callable[[Campaign, JobId], PurePosixPath]
    progress: Callable[[Campaign, JobId], "PurePosixPath | None"]
    #: (path, the stage that writes it) for what the Job reads from earlier stages.
    inputs: Callable[[Campaign, JobId], list[tuple[str, str]]]
    #: What the Job's pods upload, given the campaign's number of windows.
    outputs: Callable[[Campaign, JobId, int], list[str]]
    #: The end of the Job's name, after ``pb-{initials}-{target}-{ff}``.
    name_tail: Callable[[JobId], list[str]]


def _setup_input(campaign: Campaign) -> tuple[str, str]:
    return (f"{campaign.setup_dir}/", "setup")


_STAGE_PATHS: dict[str, _StagePaths] = {
    "setup": _StagePaths(
        identity=(),
        describe=lambda job: "setup",
        output_dir=lambda c, job: c.setup_dir,
        manifest=lambda c, job: c._file(c.setup_dir, "setup.yaml"),
        job_log=lambda c, job: c._file(c.setup_dir, "setup.log"),
        progress=lambda c, job: None,
        inputs=lambda c, job: [],
        outputs=lambda c, job, n_windows: [f"{c.setup_dir}/"],
        name_tail=lambda job: ["setup"],
    ),
    "steered": _StagePaths(
        identity=("replica",),
        describe=lambda job: f"replica {job.replica} steered MD",
        output_dir=lambda c, job: c.steered_dir(job.replica),
        manifest=lambda c, job: c._file(c.replica_dir(job.replica), f"{job.replica}-steered.yaml"),
        job_log=lambda c, job: c._file(c.steered_dir(job.replica), "steered.log"),
        progress=lambda c, job: c.steered_files(job.replica).progress,
        inputs=lambda c, job: [_setup_input(c)],
        outputs=lambda c, job, n_windows: [f"{c.steered_dir(job.replica)}/", str(c.steered_state(job.replica))]
        + [str(c.window_pdb(job.replica, w)) for w in range(n_windows)],
        name_tail=lambda job: [str(job.replica), "steered"],
    ),
    "window": _StagePaths(
        identity=("replica", "window"),
        describe=lambda job: f"replica {job.replica} window {window_tag(job.window)}",
        output_dir=lambda c, job: c.window_dir(job.replica, job.window),
        manifest=lambda c, job: c._file(c.replica_dir(job.replica), f"{job.replica}-{window_tag(job.window)}.yaml"),
        job_log=lambda c, job: c._file(c.window_dir(job.replica, job.window), "window.log"),
        progress=lambda c, job: c.window_files(job.replica, job.window).progress,
        inputs=lambda c, job: [_setup_input(c), (str(c.steered_state(job.replica)), "steered"),
                               (str(c.window_pdb(job.replica, job.window)), "steered")],
        outputs=lambda c, job, n_windows: [f"{c.window_dir(job.replica, job.window)}/"],
        name_tail=lambda job: [str(job.replica), window_tag(job.window)],
    ),
}
assert tuple(_STAGE_PATHS) == STAGES


def stage_identity(stage: str) -> tuple[str, ...]:
    """Which of ``replica`` and ``window`` a Job of ``stage`` has (setup: neither; a window: both)."""
    return _STAGE_PATHS[stage].identity


# -- Job names and labels -------------------------------------------------------

def _dns_fragment(text: str) -> str:
    """Lower-case ``text``, drop dots (as the seed did) and map the rest to ``[a-z0-9-]``."""
    text = text.lower().replace(".", "")
    text = re.sub(r"[^a-z0-9-]+", "-", text)
    return re.sub(r"-{2,}", "-", text).strip("-")


def _short_hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:8]


def job_name(initials: str, target: str, ff: str, stage: "str | JobId" = "window",
             replica: int | None = None, window: int | None = None) -> str:
    """Name of the Kubernetes Job for one piece of a campaign.

    ``pb-{initials}-{target}-{ff}-{replica}-{window}`` for a window, as in the
    seed, with ``-setup`` and ``-{replica}-steered`` for the earlier stages.
    The result is always a valid DNS-1123 label. When the plain name would be
    invalid, too long, or would lose information to the character mapping
    (dots, case, underscores), the target/FF part is shortened and an 8-digit
    hash of the full identity is added, so no two Jobs collide.
    """
    job = JobId.of(stage, replica, window)
    return _campaign_object_name(initials, target, ff, _STAGE_PATHS[job.stage].name_tail(job),
                                 (job.stage, job.replica, job.window))


def follower_name(initials: str, target: str, ff: str) -> str:
    """Name of the follower's Job, ServiceAccount, Role, RoleBinding and claim in the namespace
    (``--print-follower-job``): ``pb-{initials}-{target}-{ff}-follow``, shortened as :func:`job_name`."""
    return _campaign_object_name(initials, target, ff, ["follow"], ("follow", None, None))


def _campaign_object_name(initials: str, target: str, ff: str, tail: list[str], identity: tuple) -> str:
    head = ["pb", _dns_fragment(initials)]
    middle = [_dns_fragment(target), _dns_fragment(ff)]
    plain = "-".join(p for p in head + middle + tail if p)
    # Dropping dots is the seed's own convention and initials name people, not
    # identities, so their case is free; any other change of characters could
    # make two campaigns' Jobs meet, so it costs a hash.
    lossless = (_dns_fragment(initials) == initials.lower().replace(".", "")
                and all(_dns_fragment(t) == t.replace(".", "") for t in (target, ff)))
    if lossless and len(plain) <= _DNS_LABEL_MAX and _DNS_LABEL.match(plain):
        return plain
    digest = _short_hash(initials, target, ff, *identity)
    fixed = "-".join(p for p in head + tail if p)
    room = _DNS_LABEL_MAX - len(fixed) - len(digest) - 2
    squeezed = "-".join(p for p in middle if p)[: max(room, 0)].strip("-")
    name = "-".join(p for p in [*head, squeezed, digest, *tail] if p)
    if len(name) > _DNS_LABEL_MAX:  # absurdly long initials: keep only what is unique
        name = f"pb-{digest}-{'-'.join(tail)}"
    return name


def label_value(text: str) -> str:
    """A Kubernetes label value for ``text``: itself when valid, else a safe, unique stand-in."""
    if len(text) <= _DNS_LABEL_MAX and _LABEL_VALUE.match(text):
        return text
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    digest = _short_hash(text)
    return f"{safe[: _DNS_LABEL_MAX - 9].rstrip('-_.')}-{digest}".lstrip("-_.")


def job_labels(initials: str, target: str, ff: str, stage: str = "window",
               replica: int | None = None, window: int | None = None) -> dict[str, str]:
    """Labels that let ``kubectl get jobs -l ...`` select a campaign, target or replica."""
    labels = {
        f"{LABEL_PREFIX}/initials": label_value(initials.lower()),
        f"{LABEL_PREFIX}/target": label_value(target),
        f"{LABEL_PREFIX}/ff": label_value(ff),
        f"{LABEL_PREFIX}/campaign": label_value(f"{initials.lower()}-{target}-{ff}"),
        f"{LABEL_PREFIX}/stage": stage,
    }
    if replica is not None:
        labels[f"{LABEL_PREFIX}/replica"] = str(replica)
    if window is not None:
        labels[f"{LABEL_PREFIX}/window"] = window_tag(window)
    return labels


def job_annotations(initials: str, target: str, ff: str, stage: str = "window",
                    replica: int | None = None, window: int | None = None) -> dict[str, str]:
    """The full, unshortened identity of a Job, kept as annotations."""
    notes = {
        f"{LABEL_PREFIX}/initials": initials,
        f"{LABEL_PREFIX}/target": target,
        f"{LABEL_PREFIX}/ff": ff,
        f"{LABEL_PREFIX}/stage": stage,
    }
    if replica is not None:
        notes[f"{LABEL_PREFIX}/replica"] = str(replica)
    if window is not None:
        notes[f"{LABEL_PREFIX}/window"] = window_tag(window)
    return notes

