"""Preflight: before any Job is applied, check the bucket holds what the Jobs read.

A window Job whose inputs are not in the bucket starts, finds nothing, and
fails after minutes of scheduling, image pulling and cloning, 93 times over.
:func:`preflight` asks the bucket first and refuses the launch with the list
of what is missing and the stage that writes it:

* setup Jobs read nothing;
* steered-MD Jobs read ``S/setup/``, which counts when the stage table calls
  setup done (:func:`protbench_nrp.stages.is_complete`: its three outputs,
  none empty);
* window Jobs read ``S/setup/``, their replica's steered state and their
  window's starting structure.

Credentials come from the same place rclone takes them
(:func:`protbench_nrp.s3.s3_access`: the rclone config's remote, else the
``AWS_*`` variables); the bucket is read through
:class:`protbench_nrp.store.BucketStore`. Every
failure (no credentials, unreachable endpoint, rejected keys, missing bucket)
is a :class:`PreflightError` whose message names the cause and the fix, and
never contains a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Iterable, Mapping

from .errors import ProtbenchError
from .jobs import CampaignConfig, JobSpec
from .layout import BUCKET_PREFIX, Campaign, JobId
from .stages import is_complete, stage_of
from .s3 import S3AccessError, bucket_place, open_bucket, s3_access
from .store import BucketStore, StoreError

#: The way round the bucket that preflight's messages offer.
SKIP_FIX = "launch with --skip-preflight"


class PreflightError(ProtbenchError, RuntimeError):
    """The bucket cannot be checked, or lacks inputs of the Jobs; nothing was applied.

    Attributes
    ----------
    missing : list of MissingInput
        The inputs found missing (empty when the check itself failed).
    """

    def __init__(self, message: str, missing: Iterable["MissingInput"] = ()):
        super().__init__(message)
        self.missing = list(missing)


@dataclass(frozen=True)
class MissingInput:
    """One input absent from the bucket, and who writes it.

    Attributes
    ----------
    path : str
        Path below ``results/`` (directories end in ``/``).
    stage : str
        The stage whose Job writes it (``"setup"`` or ``"steered"``).
    replica : int or None
        The steered-MD replica that writes it.
    """

    path: str
    stage: str
    replica: int | None = None
    #: What the stage table says is lacking, when the input is there but incomplete.
    detail: str = field(default="", compare=False)

    def describe(self) -> str:
        script = stage_of(self.stage).script
        if self.replica is None:  # setup: one Job for every replica
            what = "is missing or empty" if self.path.endswith("/") else "is missing"
            if self.detail:
                what = f"is incomplete ({self.detail})"
            return (f"{self.path} {what}: written by the setup stage ({script}); "
                    f"launch STAGE = 'setup' first")
        return (f"{self.path} is missing: written by steered MD of replica {self.replica} ({script}); "
                f"launch STAGE = 'steered' with REPLICAS = ({self.replica},) first")


# -- what each Job needs -------------------------------------------------------------------

def required_inputs(job: JobSpec, campaign: Campaign) -> list[MissingInput]:
    """The inputs a Job reads that an earlier stage writes (as candidates for "missing"): its
    stage's inputs in the stage table, each with the Job that writes it."""
    return [MissingInput(needed.path, needed.producer.stage, needed.producer.replica)
            for needed in stage_of(job.id).inputs(campaign, job.id)]


def find_missing(jobs: list[JobSpec], config: CampaignConfig, store: BucketStore) -> list[MissingInput]:
    """Every input of ``jobs`` absent from the bucket, each once, in Job order.

    A directory (setup's) counts when the stage table calls the Job that
    writes it done; a file when it exists and is not empty (an empty input
    is as bad as none). Each directory is listed once, whatever the number
    of windows.

    Raises
    ------
    StoreError
        When the bucket cannot be listed.
    """
    sizes: dict[str, dict[str, int]] = {}
    judged: dict[MissingInput, str | None] = {}  # a directory input -> None (done) or what it lacks

    def lacking(needed: MissingInput, job: JobSpec) -> str | None:
        """``None`` when ``needed`` is there; else "" (absent) or what the stage table says it lacks."""
        if needed.path.endswith("/"):
            if needed not in judged:
                producer = JobId(needed.stage, needed.replica)
                completion = is_complete(store, config.campaign, producer, job.env)
                judged[needed] = None if completion.done else (
                    completion.reason if store.list(needed.path) else "")
            return judged[needed]
        file = PurePosixPath(needed.path)
        directory = str(file.parent)
        if directory not in sizes:
            sizes[directory] = store.sizes(directory)
        return None if sizes[directory].get(file.name, 0) > 0 else ""

    missing: list[MissingInput] = []
    for job in jobs:
        for needed in required_inputs(job, config.campaign):
            if needed in missing:
                continue
            detail = lacking(needed, job)
            if detail is not None:
                missing.append(replace(needed, detail=detail))
    return missing


# -- the check -----------------------------------------------------------------------

def preflight(jobs: list[JobSpec], config: CampaignConfig, environ: Mapping[str, str] | None = None) -> None:
    """Check that the bucket is reachable and holds every input ``jobs`` read.

    Parameters
    ----------
    jobs : list of JobSpec
        The Jobs about to be applied.
    config : CampaignConfig
        Gives the bucket, the rclone remote and the campaign layout.
    environ : mapping, optional
        Environment to take ``RCLONE_CONFIG``, ``HOME`` and ``AWS_*`` from
        (default ``os.environ``).

    Raises
    ------
    PreflightError
        Listing every missing input with the stage that writes it, or naming
        why the bucket could not be checked.
    """
    try:
        access = s3_access(config.rclone_remote, environ, other_fix=SKIP_FIX)
        client = open_bucket(access, config.bucket, f"check BUCKET ('{config.bucket}') in run-umbrella-windows.py")
    except S3AccessError as error:
        raise PreflightError(str(error)) from None
    where = bucket_place(access, config.bucket)
    try:
        missing = find_missing(jobs, config, BucketStore(client, config.bucket))
    except StoreError as error:
        raise PreflightError(f"{error}, or {SKIP_FIX}") from None
    if missing:
        lines = "\n".join(f"  - {item.describe()}" for item in missing)
        raise PreflightError(
            f"{where} lacks {len(missing)} input(s) of the selected Jobs (paths below "
            f"{BUCKET_PREFIX}/):\n{lines}\nNothing was applied.", missing)


__all__ = ["PreflightError", "MissingInput", "preflight", "find_missing", "required_inputs"]
