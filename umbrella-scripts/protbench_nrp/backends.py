"""Where ``--follow`` runs its Jobs, behind one small interface: submit, read states, delete.

:class:`Backend` is all the reconciler (:mod:`protbench_nrp.follow`) asks of
a place that runs Jobs; :class:`ClusterBackend` is the Kubernetes cluster,
through :class:`~protbench_nrp.cluster.Kubectl` (which runs kubectl and
parses what it says). A Job's state is a :class:`~protbench_nrp.cluster.JobPhase`.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Protocol

from .cluster import JobExists, JobInfo, JobPhase, Kubectl

__all__ = ["Backend", "ClusterBackend", "Submitted", "JobPhase", "JobInfo"]


class Submitted(enum.Enum):
    """What became of a submission."""

    CREATED = "created"
    #: A Job of that name was there already: another follower got there first. Not an error.
    EXISTS = "exists"


class Backend(Protocol):
    """What the reconciler asks of the place its Jobs run."""

    def read_states(self) -> dict[str, JobInfo]:
        """Every Job of the campaign by name, in one request; a Job not listed is :attr:`JobPhase.GONE`.

        Raises ``KubectlError`` (a ``ProtbenchError``) when the states cannot be read.
        """

    def submit(self, manifest: Path, name: str) -> Submitted:
        """Create Job ``name`` from the manifest file ``manifest`` (its provenance)."""

    def delete(self, info: JobInfo) -> None:
        """Delete a Job and wait until it and its pods are gone; pods stuck on a lost node are
        force-deleted first, as docs/failures.md's runbook says."""


class ClusterBackend:
    """The campaign's Jobs on the Kubernetes cluster, one label ``selector`` picking them out."""

    def __init__(self, kubectl: Kubectl, selector: str):
        self.kubectl = kubectl
        self.selector = selector

    def read_states(self) -> dict[str, JobInfo]:
        return self.kubectl.job_states(self.selector)

    def submit(self, manifest: Path, name: str) -> Submitted:
        try:
            self.kubectl.create(manifest, name)
        except JobExists:
            return Submitted.EXISTS
        return Submitted.CREATED

    def delete(self, info: JobInfo) -> None:
        # A pod on a lost node never confirms its end: the Job's delete would wait for it forever.
        for pod in info.lost_pods:
            self.kubectl.force_delete_pod(pod.name)
        self.kubectl.delete(info.name)
