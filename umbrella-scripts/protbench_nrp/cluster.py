"""The cluster: submitting Jobs to it and reading their states back. All through ``kubectl``.

Submitting, for the launcher: one small interface, :class:`Kubectl` asks for the states of a campaign's Jobs
in one query (:meth:`Kubectl.job_states`), creates a Job from its provenance
file (:meth:`Kubectl.create`, never ``apply``: an existing Job is an error, not
a silent ``unchanged``), and deletes a Job waiting until it and its pods are
gone (:meth:`Kubectl.delete`). Failures come back as :class:`KubectlError`
with a message naming the Job and what to do.

Reading, for ``--status`` (and :meth:`Kubectl.job_states`):
:func:`parse_cluster_list` turns the JSON of ``kubectl get jobs,pods -o json``
into a :class:`ClusterJob` per Job, telling pods stuck terminating on a lost
node (:func:`lost_pods`) and why a Failed Job failed (:func:`failure_reason`);
:func:`query_cluster` runs kubectl for a :func:`campaign_selector` and gives a
:class:`ClusterView`, which says why when the cluster cannot be reached.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import exits
from .errors import ProtbenchError
from .jobs import CampaignConfig
from .layout import LABEL_PREFIX, job_labels

#: Longest wait for one ``kubectl create`` or ``get``.
KUBECTL_TIMEOUT_S = 300
#: Longest wait for a deleted Job (and its pods) to be gone. A Failed or
#: Complete Job's pods have stopped already, so this is seconds; a pod stuck
#: Terminating on a lost node keeps the Job, and the error says so.
DELETE_TIMEOUT_S = 180
#: Longest wait for ``--status``'s ``kubectl get``: a table of results beats a hung one.
QUERY_TIMEOUT_S = 60
#: A pod still terminating this long after its grace period ended is taken for one on a lost node.
NODE_LOST_AFTER_S = 5 * 60.0


class JobState(enum.Enum):
    """What :option:`--relaunch` needs to know of a Job."""

    ACTIVE = "active"        # pods running or pending, or waiting for one; also suspended
    COMPLETE = "complete"
    FAILED = "failed"
    ABSENT = "absent"        # no such Job: never created, deleted, or gone by ttlSecondsAfterFinished


class JobPhase(enum.Enum):
    """What ``--follow`` needs to know of a Job: :class:`JobState`, finer.

    A Failed Job is ``failed-fatal`` when a ``FailJob`` rule of its
    podFailurePolicy failed it (no retry can help: exits.py), else
    ``failed-retryable`` (``BackoffLimitExceeded``, a deadline); an active
    Job whose pod is stuck terminating on a lost node is ``node-lost``.
    """

    PENDING = "pending"      # waiting for a pod, a node or an init container; also suspended
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED_RETRYABLE = "failed-retryable"
    FAILED_FATAL = "failed-fatal"
    NODE_LOST = "node-lost"
    GONE = "gone"            # no such Job

    @property
    def state(self) -> JobState:
        """The coarse :class:`JobState` ``--relaunch`` judges by."""
        return _COARSE[self]


_COARSE = {JobPhase.PENDING: JobState.ACTIVE, JobPhase.RUNNING: JobState.ACTIVE,
           JobPhase.NODE_LOST: JobState.ACTIVE, JobPhase.SUCCEEDED: JobState.COMPLETE,
           JobPhase.FAILED_RETRYABLE: JobState.FAILED, JobPhase.FAILED_FATAL: JobState.FAILED,
           JobPhase.GONE: JobState.ABSENT}


class KubectlError(ProtbenchError, RuntimeError):
    """kubectl failed, timed out or said something unusable."""


class JobExists(KubectlError):
    """``kubectl create`` answered AlreadyExists: a Job of that name is on the cluster already."""


@dataclass(frozen=True)
class JobInfo:
    """One Job as the cluster reports it: its state and, for an active one, Kubernetes' word for it."""

    name: str
    state: JobState
    detail: str = ""  # e.g. "Running", "Pending", "Suspended", or a Failed Job's reason
    phase: JobPhase = JobPhase.PENDING
    failure: str = ""  # a Failed Job: the rule or exit status that failed it, with its meaning
    lost_pods: tuple["LostPod", ...] = ()


def job_state_of(kubernetes_state: str) -> JobState:
    """Map :attr:`ClusterJob.state` (``Complete``, ``Failed``, ``Running``, ...) to a :class:`JobState`."""
    return {"Complete": JobState.COMPLETE, "Failed": JobState.FAILED}.get(kubernetes_state, JobState.ACTIVE)


def job_phase_of(job: "ClusterJob") -> JobPhase:
    """The :class:`JobPhase` of one Job as :func:`parse_cluster_list` read it."""
    if job.state == "Complete":
        return JobPhase.SUCCEEDED
    if job.state == "Failed":
        return JobPhase.FAILED_FATAL if job.detail == "PodFailurePolicy" else JobPhase.FAILED_RETRYABLE
    if job.lost_pods:
        return JobPhase.NODE_LOST
    return JobPhase.RUNNING if job.state == "Running" else JobPhase.PENDING


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
        result = self._run(["get", "jobs,pods", "-l", selector, "-o", "json"], self.timeout_s,
                           "asking the cluster for the campaign's Jobs")
        if result.returncode != 0:
            raise KubectlError(f"kubectl get jobs failed (exit {result.returncode}): {self._message(result)}")
        try:
            jobs = parse_cluster_list(json.loads(result.stdout))
        except ValueError as error:
            raise KubectlError(f"kubectl get jobs returned unusable output ({error})") from None
        return {name: JobInfo(name, job_state_of(job.state), job.state if job.state not in (
            "Complete", "Failed") else job.detail, job_phase_of(job), job.failure, job.lost_pods)
                for name, job in jobs.items()}

    def create(self, path: Path, name: str) -> str:
        """``kubectl create -f path``; kubectl's answer, or :class:`KubectlError`.

        An existing Job of that name makes kubectl fail with AlreadyExists,
        which is reported, never taken for success.
        """
        result = self._run(["create", "-f", str(path)], self.timeout_s, f"creating {name}")
        if result.returncode != 0:
            message = self._message(result)
            if "AlreadyExists" in message or "already exists" in message:
                raise JobExists(
                    f"kubectl create failed for {name} (exit {result.returncode}): {message}\n  a Job {name} "
                    f"exists on the cluster already; nothing of it was changed. Look at it with kubectl get "
                    f"job {name}; replace it with --relaunch (a Failed one) or --extend (a Complete one)")
            raise KubectlError(f"kubectl create failed for {name} (exit {result.returncode}): {message}")
        return result.stdout.strip() or f"job.batch/{name} created"

    def force_delete_pod(self, pod: str) -> None:
        """``kubectl delete pod --force --grace-period=0``: the runbook for a pod stuck on a lost node
        (docs/failures.md: A lost node), after which the Job may start a new pod."""
        result = self._run(["delete", "pod", pod, "--force", "--grace-period=0"], self.timeout_s,
                           f"force-deleting pod {pod}")
        if result.returncode != 0 and "NotFound" not in self._message(result):
            raise KubectlError(f"kubectl delete pod {pod} --force failed (exit {result.returncode}): "
                               f"{self._message(result)}")

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
                f"(see docs/failures.md: A lost node)")


def kube_namespace(environ: dict[str, str] | None = None) -> str:
    """The namespace kubectl would create the Jobs in, in words: ``"nrp-lab (context nautilus)"``.

    The launcher gives kubectl no ``--namespace``, so its Jobs go to the
    current context's namespace, or ``default`` when that context sets none.
    This reads the kubeconfig as kubectl does (the files of ``$KUBECONFIG``
    in order, else ``~/.kube/config``; the first file to set
    ``current-context``, and the first to define that context, win) without
    running it: a dry run asks no program and no network. What cannot be
    told is said, never guessed.
    """
    import yaml  # here: --status, which imports this module too, reads no YAML

    environ = os.environ if environ is None else environ
    listed = [path for path in environ.get("KUBECONFIG", "").split(os.pathsep) if path]
    home = environ.get("HOME") or os.path.expanduser("~")
    paths = [Path(path) for path in listed] or [Path(home) / ".kube" / "config"]
    configs = []
    for path in paths:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            return f"unknown (cannot read the kubeconfig {path}: {str(error).splitlines()[0]})"
        if isinstance(loaded, dict):
            configs.append(loaded)
    where = f"KUBECONFIG={environ['KUBECONFIG']}" if listed else str(paths[0])
    if not configs:
        return f"unknown (no kubeconfig in {where}: set up kubectl for Nautilus first, https://docs.nrp.ai/)"
    current = next((c["current-context"] for c in configs if c.get("current-context")), None)
    if not current:
        return f"unknown (the kubeconfig in {where} names no current context: kubectl config use-context NAME)"
    for config in configs:
        for entry in config.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") == current:
                namespace = (entry.get("context") or {}).get("namespace")
                if namespace:
                    return f"{namespace} (context {current})"
                return f"default (context {current} sets none: kubectl config set-context --current --namespace=NAME)"
    return f"unknown (current context {current} is not defined in the kubeconfig in {where})"


# -- the cluster ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterJob:
    """What Kubernetes says about one Job and its pods.

    Attributes
    ----------
    state : str
        ``"Complete"``, ``"Failed"``, ``"Suspended"``, ``"Running"`` (a pod's
        main container runs), ``"Pending"`` (pods exist but none runs yet:
        unscheduled, pulling, initialising, crash-looping) or ``"Waiting"``
        (no pod at all).
    detail : str
        Why, when Kubernetes says: a condition reason (``BackoffLimitExceeded``)
        or a container's waiting reason (``CrashLoopBackOff``, ``Unschedulable``).
    restarts : int
        Container restarts summed over the Job's pods (pod ``restartCount``).
    failed_pods : int
        Pods of the Job that failed (Job ``status.failed``), e.g. evictions.
    """

    name: str
    state: str
    detail: str = ""
    restarts: int = 0
    failed_pods: int = 0
    lost_pods: tuple[LostPod, ...] = ()
    failure: str = ""  # a Failed Job: the rule or exit status that failed it, and its meaning

    @property
    def restarts_total(self) -> int:
        return self.restarts + self.failed_pods


@dataclass(frozen=True)
class LostPod:
    """A pod whose deletion has been pending longer than its grace period plus NODE_LOST_AFTER_S."""

    name: str
    node: str
    pending_s: float
    grace_s: float


def _timestamp(text: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def lost_pods(pods: list[dict], now: float) -> tuple[LostPod, ...]:
    """The pods of ``pods`` stuck terminating: a lost node's kubelet never confirms their end.

    Kubernetes sets ``deletionTimestamp`` to the time of the delete request
    plus the grace period, so a deletion is pending since
    ``deletionTimestamp - deletionGracePeriodSeconds``.
    """
    lost = []
    for pod in pods:
        metadata = pod.get("metadata", {}) or {}
        deadline = _timestamp(metadata.get("deletionTimestamp", "")) if metadata.get("deletionTimestamp") else None
        if deadline is None:
            continue
        grace = metadata.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec", {}) or {}).get("terminationGracePeriodSeconds", 30)
        grace = float(grace or 0)
        pending = now - (deadline - grace)
        if pending > grace + NODE_LOST_AFTER_S:
            lost.append(LostPod(metadata.get("name", "?"), (pod.get("spec", {}) or {}).get("nodeName", "?"),
                                pending, grace))
    return tuple(lost)


def failure_reason(job: dict, pods: list[dict]) -> str:
    """Why a Failed Job failed: the podFailurePolicy rule and exit status, or the backoff limit.

    Kubernetes writes ``PodFailurePolicy`` with a message naming the container,
    its exit code and the rule's index; ``BackoffLimitExceeded`` names no
    status, so the last failed pod's main container tells.
    """
    import re

    conditions = _true_conditions(job)
    failed = conditions.get("Failed") or conditions.get("FailureTarget") or {}
    reason, message = failed.get("reason", "") or "", failed.get("message", "") or ""
    if reason == "PodFailurePolicy":
        match = re.search(r"exit code (\d+)", message)
        rule = re.search(r"rule at index (\d+)", message)
        where = f"podFailurePolicy rule {rule.group(1)} (FailJob)" if rule else "podFailurePolicy (FailJob)"
        if match:
            return f"{where}: {exits.describe(int(match.group(1)))}"
        return f"{where}: {message or 'no message'}"
    last = _last_exit_code(pods)
    last_text = f"; last pod: {exits.describe(last)}" if last is not None else ""
    if reason == "BackoffLimitExceeded":
        limit = (job.get("spec", {}) or {}).get("backoffLimit")
        return (f"backoffLimit{f' ({limit})' if limit is not None else ''} reached by counted failures"
                f"{last_text}")
    return f"{reason or 'Failed'}: {message or 'no message'}{last_text}"


def _last_exit_code(pods: list[dict]) -> int | None:
    """Exit code of the main container of the most recently finished failed pod."""
    ends = []
    for pod in pods:
        if (pod.get("status", {}) or {}).get("phase") != "Failed":
            continue
        for container in (pod.get("status", {}) or {}).get("containerStatuses", []) or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if container.get("name") == "main" and "exitCode" in terminated:
                ends.append((str(terminated.get("finishedAt", "")), int(terminated["exitCode"])))
    return max(ends)[1] if ends else None


@dataclass(frozen=True)
class ClusterView:
    """The campaign's Jobs by name, or ``jobs=None`` and the reason the cluster was not read."""

    jobs: dict[str, ClusterJob] | None
    note: str = ""

    @property
    def reachable(self) -> bool:
        return self.jobs is not None


def _true_conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in obj.get("status", {}).get("conditions", []) or []
            if str(c.get("status")) == "True"}


def _pod_owner(pod: dict) -> str | None:
    for owner in pod.get("metadata", {}).get("ownerReferences", []) or []:
        if owner.get("kind") == "Job":
            return owner.get("name")
    labels = pod.get("metadata", {}).get("labels", {}) or {}
    return labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")


def _pod_summary(pod: dict) -> tuple[bool, str, int]:
    """``(main container running, waiting reason, restarts)`` of one pod."""
    status = pod.get("status", {}) or {}
    containers = status.get("containerStatuses", []) or []
    inits = status.get("initContainerStatuses", []) or []
    restarts = sum(int(c.get("restartCount", 0) or 0) for c in containers + inits)
    running = status.get("phase") == "Running" and any("running" in (c.get("state") or {})
                                                       for c in containers)
    reason = ""
    for c in inits + containers:
        waiting = (c.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "PodInitializing", "ContainerCreating"):
            reason = waiting["reason"]
            break
    if not reason:
        scheduled = next((c for c in status.get("conditions", []) or []
                          if c.get("type") == "PodScheduled"), None)
        if scheduled and str(scheduled.get("status")) == "False":
            reason = scheduled.get("reason") or "Unschedulable"
        elif status.get("phase") == "Pending":
            waiting = [c for c in inits if "running" in (c.get("state") or {})]
            reason = f"init: {waiting[0].get('name')}" if waiting else "starting"
    return running, reason, restarts


def parse_cluster_list(payload: dict, now: float | None = None) -> dict[str, ClusterJob]:
    """Jobs (with their pods) of a ``kubectl get jobs,pods -o json`` List.

    Parameters
    ----------
    payload : dict
        The decoded JSON: ``{"kind": "List", "items": [Job..., Pod...]}``.
    now : float, optional
        Seconds since the epoch, to tell pods stuck terminating (default: now).

    Raises
    ------
    ValueError
        When ``payload`` is not such a list.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise ValueError("kubectl did not return a List with 'items'")
    pods: dict[str, list[dict]] = {}
    for item in payload["items"]:
        if item.get("kind") == "Pod":
            owner = _pod_owner(item)
            if owner:
                pods.setdefault(owner, []).append(item)
    jobs = {}
    for item in payload["items"]:
        if item.get("kind") != "Job":
            continue
        name = item.get("metadata", {}).get("name", "")
        status = item.get("status", {}) or {}
        conditions = _true_conditions(item)
        summaries = [_pod_summary(p) for p in pods.get(name, [])
                     if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        restarts = sum(_pod_summary(p)[2] for p in pods.get(name, []))
        detail = ""
        if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
            state = "Complete"
        elif "Failed" in conditions or "FailureTarget" in conditions:
            state = "Failed"
            failed = conditions.get("Failed") or conditions.get("FailureTarget")
            detail = failed.get("reason", "") or ""
        elif "Suspended" in conditions or (item.get("spec", {}) or {}).get("suspend"):
            state = "Suspended"
        elif any(running for running, _, _ in summaries):
            state = "Running"
        elif summaries or int(status.get("active", 0) or 0) > 0:
            state = "Pending"
            detail = next((reason for _, reason, _ in summaries if reason), "")
        else:
            state = "Waiting"
        own = pods.get(name, [])
        jobs[name] = ClusterJob(name, state, detail, restarts, int(status.get("failed", 0) or 0),
                                lost_pods=lost_pods(own, time.time() if now is None else now),
                                failure=failure_reason(item, own) if state == "Failed" else "")
    return jobs


def campaign_selector(config: CampaignConfig) -> str:
    """``kubectl -l`` selector of every Job of the campaign (any stage)."""
    key = f"{LABEL_PREFIX}/campaign"
    return f"{key}={job_labels(config.initials, config.target, config.ff)[key]}"


def query_cluster(selector: str, kubectl: str | None = None,
                  timeout_s: float = QUERY_TIMEOUT_S) -> ClusterView:
    """Run ``kubectl get jobs,pods -l SELECTOR -o json``; never raises for an unreachable cluster."""
    kubectl = kubectl or shutil.which("kubectl")
    if kubectl is None:
        return ClusterView(None, "kubectl is not on PATH: cluster state unknown, showing results only")
    try:
        done = subprocess.run([kubectl, "get", "jobs,pods", "-l", selector, "-o", "json"],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return ClusterView(None, f"kubectl get did not answer within {timeout_s:g} s: cluster "
                                 f"unreachable, showing results only")
    except OSError as error:
        return ClusterView(None, f"kubectl could not run ({error}): showing results only")
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return ClusterView(None, f"kubectl get failed ({reason}): cluster unreachable, showing "
                                 f"results only")
    try:
        return ClusterView(parse_cluster_list(json.loads(done.stdout)))
    except ValueError as error:
        return ClusterView(None, f"kubectl returned unusable output ({error}): showing results only")
