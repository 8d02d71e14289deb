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
    comparison/A_vs_B-...                     campaigns A, B, ... side by side
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

#: The three kinds of Job a campaign is made of, in the order they must run.
STAGES = ("setup", "steered", "window")

#: Where the results root lies in the bucket: ``{remote}:{bucket}/results/<layout path>``.
#: (The pod scripts, in shell, spell it out too.)
BUCKET_PREFIX = "results"

#: Prefix of every label and annotation the launcher puts on a Job.
LABEL_PREFIX = "protbench.openforcefield.org"

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

    # -- provenance -----------------------------------------------------------
    def manifest(self, stage: str, replica: int | None = None, window: int | None = None) -> PurePosixPath:
        """Where the provenance manifest of a Job is kept.

        A window Job's is ``S/replica-{R}/S-{R}-{WW}.yaml``, as in the seed.
        """
        _check_stage(stage)
        if stage == "setup":
            return self._file(self.setup_dir, "setup.yaml")
        if stage == "steered":
            return self._file(self.replica_dir(replica), f"{replica}-steered.yaml")
        return self._file(self.replica_dir(replica), f"{replica}-{window_tag(window)}.yaml")

    def manifest_attempt(self, stage: str, replica: int | None = None, window: int | None = None,
                         attempt: int = 1) -> PurePosixPath:
        """An earlier attempt's provenance, kept when ``--relaunch`` replaced its Job.

        ``NAME.attempt-K.yaml`` beside ``NAME.yaml`` (:meth:`manifest`), K from 1.
        """
        if attempt < 1:
            raise ValueError(f"attempts are numbered from 1, got {attempt}")
        current = self.manifest(stage, replica, window)
        return current.with_name(f"{current.stem}.attempt-{attempt}.yaml")

    def job_log(self, stage: str, replica: int | None = None, window: int | None = None) -> PurePosixPath:
        """Console output of a Job run by ``--local``, kept beside the Job's outputs."""
        _check_stage(stage)
        if stage == "setup":
            return self._file(self.setup_dir, "setup.log")
        if stage == "steered":
            return self._file(self.steered_dir(replica), "steered.log")
        return self._file(self.window_dir(replica, window), "window.log")

    # -- run records ------------------------------------------------------------
    def output_dir(self, stage: str, replica: int | None = None, window: int | None = None) -> PurePosixPath:
        """The directory a Job's pods write their own outputs to (and upload)."""
        _check_stage(stage)
        if stage == "setup":
            return self.setup_dir
        if stage == "steered":
            return self.steered_dir(replica)
        return self.window_dir(replica, window)

    def run_records_dir(self, stage: str, replica: int | None = None,
                        window: int | None = None) -> PurePosixPath:
        """Where the run records of a Job's pods lie: one JSON per pod, inside its outputs."""
        return self.output_dir(stage, replica, window) / "run-records"

    def run_record(self, stage: str, replica: int | None, window: int | None, pod: str) -> PurePosixPath:
        """The run record of pod ``pod`` (its Kubernetes name, a DNS label) of a Job."""
        if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", pod or ""):
            raise ValueError(f"pod name {pod!r} cannot name a run record: expected a Kubernetes pod name")
        return self.run_records_dir(stage, replica, window) / f"{pod}.json"

    def progress_file(self, stage: str, replica: int | None = None,
                      window: int | None = None) -> PurePosixPath | None:
        """The progress record a Job's script rewrites as it runs; ``None`` for setup, which keeps none."""
        _check_stage(stage)
        if stage == "setup":
            return None
        if stage == "steered":
            return self.steered_files(replica).progress
        return self.window_files(replica, window).progress

    # -- what a Job reads and writes -------------------------------------------
    def stage_inputs(self, stage: str, replica: int | None = None,
                     window: int | None = None) -> list[tuple[str, str]]:
        """What a Job reads that an earlier stage writes, each with the stage that writes it.

        These must be in the bucket before the Job is applied (the launcher's
        preflight checks them). Directories end in ``/``.
        """
        _check_stage(stage)
        if stage == "setup":
            return []
        setup = (f"{self.setup_dir}/", "setup")
        if stage == "steered":
            return [setup]
        return [setup,
                (str(self.steered_state(replica)), "steered"),
                (str(self.window_pdb(replica, window)), "steered")]

    def required_files(self, stage: str, replica: int | None = None, window: int | None = None,
                       n_windows: int | None = None) -> list[str]:
        """Entries a pod copies from the bucket before it starts.

        Its inputs (:meth:`stage_inputs`) and its own earlier outputs, so that
        a restarted pod resumes; those are absent for the first pod, which the
        copy step tolerates. A restarted steered-MD pod needs the window
        structures already saved (give ``n_windows``): the pull resumes past
        their crossings and would not save them again.
        """
        inputs = [path for path, _producer in self.stage_inputs(stage, replica, window)]
        if stage == "setup":
            return [f"{self.setup_dir}/"]
        if stage == "steered":
            return inputs + self.output_files("steered", replica, n_windows=n_windows)
        return inputs + [f"{self.window_dir(replica, window)}/"]

    def output_files(self, stage: str, replica: int | None = None, window: int | None = None,
                     n_windows: int | None = None) -> list[str]:
        """Entries a pod uploads to the bucket: its own outputs and nothing else."""
        _check_stage(stage)
        if stage == "setup":
            return [f"{self.setup_dir}/"]
        if stage == "steered":
            return [f"{self.steered_dir(replica)}/", str(self.steered_state(replica))] + [
                str(self.window_pdb(replica, w)) for w in range(n_windows or 0)
            ]
        return [f"{self.window_dir(replica, window)}/"]


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


# -- Job names and labels -------------------------------------------------------

def _dns_fragment(text: str) -> str:
    """Lower-case ``text``, drop dots (as the seed did) and map the rest to ``[a-z0-9-]``."""
    text = text.lower().replace(".", "")
    text = re.sub(r"[^a-z0-9-]+", "-", text)
    return re.sub(r"-{2,}", "-", text).strip("-")


def _short_hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:8]


def job_name(initials: str, target: str, ff: str, stage: str = "window",
             replica: int | None = None, window: int | None = None) -> str:
    """Name of the Kubernetes Job for one piece of a campaign.

    ``pb-{initials}-{target}-{ff}-{replica}-{window}`` for a window, as in the
    seed, with ``-setup`` and ``-{replica}-steered`` for the earlier stages.
    The result is always a valid DNS-1123 label. When the plain name would be
    invalid, too long, or would lose information to the character mapping
    (dots, case, underscores), the target/FF part is shortened and an 8-digit
    hash of the full identity is added, so no two Jobs collide.
    """
    _check_stage(stage)
    if stage == "setup":
        tail = ["setup"]
    elif stage == "steered":
        tail = [str(replica), "steered"]
    else:
        tail = [str(replica), window_tag(window)]
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
    digest = _short_hash(initials, target, ff, stage, replica, window)
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


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
