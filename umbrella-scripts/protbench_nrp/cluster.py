"""The cluster, as the launcher needs it: Job states, create, delete. All through ``kubectl``.

One small interface: :class:`Kubectl` asks for the states of a campaign's Jobs
in one query (:meth:`Kubectl.job_states`), creates a Job from its provenance
file (:meth:`Kubectl.create`, never ``apply``: an existing Job is an error, not
a silent ``unchanged``), and deletes a Job waiting until it and its pods are
gone (:meth:`Kubectl.delete`). Failures come back as :class:`KubectlError`
with a message naming the Job and what to do.
"""

from __future__ import annotations

import enum
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ProtbenchError

#: Longest wait for one ``kubectl create`` or ``get``.
KUBECTL_TIMEOUT_S = 300
#: Longest wait for a deleted Job (and its pods) to be gone. A Failed or
#: Complete Job's pods have stopped already, so this is seconds; a pod stuck
#: Terminating on a lost node keeps the Job, and the error says so.
DELETE_TIMEOUT_S = 180


class JobState(enum.Enum):
    """What :option:`--relaunch` needs to know of a Job."""

    ACTIVE = "active"        # pods running or pending, or waiting for one; also suspended
    COMPLETE = "complete"
    FAILED = "failed"
    ABSENT = "absent"        # no such Job: never created, deleted, or gone by ttlSecondsAfterFinished


class KubectlError(ProtbenchError, RuntimeError):
    """kubectl failed, timed out or said something unusable."""


@dataclass(frozen=True)
class JobInfo:
    """One Job as the cluster reports it: its state and, for an active one, Kubernetes' word for it."""

    name: str
    state: JobState
    detail: str = ""  # e.g. "Running", "Pending", "Suspended", or a Failed Job's reason


def job_state_of(kubernetes_state: str) -> JobState:
    """Map :attr:`status.ClusterJob.state` (``Complete``, ``Failed``, ``Running``, ...) to a :class:`JobState`."""
    return {"Complete": JobState.COMPLETE, "Failed": JobState.FAILED}.get(kubernetes_state, JobState.ACTIVE)


class Kubectl:
    """``kubectl`` at ``path``, each call bounded in time."""

    def __init__(self, path: str, timeout_s: float = KUBECTL_TIMEOUT_S,
                 delete_timeout_s: float = DELETE_TIMEOUT_S):
        self.path = path
        self.timeout_s = timeout_s
        self.delete_timeout_s = delete_timeout_s

    def _run(self, args: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.path, *args], capture_output=True, text=True, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise KubectlError(f"{what}: kubectl gave no answer in {timeout_s:g} s") from None
        except OSError as error:
            raise KubectlError(f"{what}: kubectl could not run ({error})") from None

    @staticmethod
    def _message(result: subprocess.CompletedProcess) -> str:
        return result.stderr.strip() or result.stdout.strip() or "no message"

    def job_states(self, selector: str) -> dict[str, JobInfo]:
        """Every Job matching the label ``selector``, by name: one ``kubectl get jobs,pods`` call
        (the pods tell a Running Job from a Pending one)."""
        from .status import parse_cluster_list

        result = self._run(["get", "jobs,pods", "-l", selector, "-o", "json"], self.timeout_s,
                           "asking the cluster for the campaign's Jobs")
        if result.returncode != 0:
            raise KubectlError(f"kubectl get jobs failed (exit {result.returncode}): {self._message(result)}")
        try:
            jobs = parse_cluster_list(json.loads(result.stdout))
        except ValueError as error:
            raise KubectlError(f"kubectl get jobs returned unusable output ({error})") from None
        return {name: JobInfo(name, job_state_of(job.state), job.state if job.state not in (
            "Complete", "Failed") else job.detail) for name, job in jobs.items()}

    def create(self, path: Path, name: str) -> str:
        """``kubectl create -f path``; kubectl's answer, or :class:`KubectlError`.

        An existing Job of that name makes kubectl fail with AlreadyExists,
        which is reported, never taken for success.
        """
        result = self._run(["create", "-f", str(path)], self.timeout_s, f"creating {name}")
        if result.returncode != 0:
            message = self._message(result)
            hint = ""
            if "AlreadyExists" in message or "already exists" in message:
                hint = (f"\n  a Job {name} exists on the cluster already; nothing of it was changed. "
                        f"Look at it with kubectl get job {name}; replace it with --relaunch "
                        f"(a Failed one) or --extend (a Complete one)")
            raise KubectlError(f"kubectl create failed for {name} (exit {result.returncode}): {message}{hint}")
        return result.stdout.strip() or f"job.batch/{name} created"

    def delete(self, name: str) -> None:
        """Delete Job ``name`` and wait until it and its pods are gone (bounded), else :class:`KubectlError`."""
        timeout = f"{self.delete_timeout_s:g}s"
        result = self._run(["delete", "job", name, "--cascade=foreground", "--wait=true",
                            f"--timeout={timeout}"], self.delete_timeout_s + 30, f"deleting {name}")
        if result.returncode != 0:
            raise KubectlError(
                f"kubectl delete job {name} failed or did not finish within {timeout} (exit "
                f"{result.returncode}): {self._message(result)}\n  the old Job may still exist: check "
                f"with kubectl get job,pods -l job-name={name}; a pod stuck Terminating is on a lost node "
                f"(see README: node lost?)")
