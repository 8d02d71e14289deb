"""A simulated Kubernetes cluster that runs the Jobs it is given, for the ``--follow`` tests.

Only the cluster is a stand-in: each created Job's pod runs the manifest's
own containers (``init-git``, ``init-rclone``, then ``main``) as local
processes with the manifest's environment (:class:`tests.pod.harness.Pod`
resolves it as the kubelet would), against the loopback S3 server and a local
bare git remote. The state lives in a directory; :class:`SimCluster` is its
controller, and the ``kubectl`` stand-in (:meth:`SimCluster.install_kubectl`)
is a script that runs :func:`main` on it. Every ``kubectl`` call, and a
controller thread in the test, first brings the state up to date
(:meth:`SimCluster.reconcile`), under a file lock.

Kubernetes' Job semantics, as the API server and the Job controller apply
them: ``restartPolicy: Never`` (every retry a new pod), one pod at a time and
a new one only once the last has really stopped (``podReplacementPolicy:
Failed``), ``podFailurePolicy`` rules in order (``onPodConditions`` such as
``DisruptionTarget``, ``onExitCodes`` with ``In``/``NotIn``; ``Ignore``,
``FailJob``, ``Count``), ``backoffLimit``, and the Job's conditions with the
reasons and messages the controller writes (``FailureTarget`` then
``Failed``: ``PodFailurePolicy`` naming the container, its exit code and the
rule's index, or ``BackoffLimitExceeded``; ``SuccessCriteriaMet`` then
``Complete``). ``create`` refuses an existing name (AlreadyExists) and what is
not a valid Job; ``delete job --wait`` waits until the Job's pods have
stopped (SIGTERM, grace period), and times out on a pod stuck on a lost node;
``delete pod --force --grace-period=0`` removes such a pod.

Faults a test injects (:meth:`SimCluster.add_fault`), each on the N-th pod
ever made for a Job name (relaunches included):

* ``exit``: a container exits at once with a chosen status;
* ``preempt``: once the main container runs (and, if given, once a file of
  the pod's results exists and holds a text), the pod gets ``DisruptionTarget``
  and SIGTERM, and has its grace period to checkpoint and upload. A file
  trigger freezes the pod's processes the moment it fires (the stand-in
  kubelet, ``podrun.py``, watches it) until the controller lands the fault, so
  a late controller pass on a loaded machine cannot let the pod run past it;
* ``lose``: likewise, but its processes are SIGKILLed (no upload) and the pod
  stays ``Terminating`` for good, its deletion requested ``stuck_for_s`` ago.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parents[2]
PODRUN = Path(__file__).with_name("podrun.py")
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

KUBECTL = """#!{python}
import sys
sys.path[:0] = [{root!r}, {scripts!r}]
from tests.simcluster.cluster import main
sys.exit(main({state!r}, sys.argv[1:]))
"""


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes: reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


class SimCluster:
    """The cluster's state in ``root`` and its controller.

    Parameters
    ----------
    root : Path
        Where the state, the pods' directories and the call log live.
    secrets : dict
        Secret name -> the file its ``rclone.conf`` key holds (the rclone secret).
    """

    def __init__(self, root: Path, secrets: dict[str, Path] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "pods").mkdir(exist_ok=True)
        if secrets is not None:
            (self.root / "secrets.json").write_text(json.dumps({k: str(v) for k, v in secrets.items()}))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state -----------------------------------------------------------------------
    @contextmanager
    def locked(self):
        with open(self.root / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._load()
            before = json.dumps(state, sort_keys=True)
            try:
                yield state
            finally:
                if json.dumps(state, sort_keys=True) != before:
                    (self.root / "state.json.new").write_text(json.dumps(state))
                    os.replace(self.root / "state.json.new", self.root / "state.json")
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict:
        path = self.root / "state.json"
        state = json.loads(path.read_text()) if path.exists() else {}
        for key in ("jobs", "pods", "pod_counts", "faults", "created"):
            state.setdefault(key, {} if key != "created" else [])
        return state

    def state(self) -> dict:
        with self.locked() as state:
            return json.loads(json.dumps(state))

    def calls(self) -> list[list[str]]:
        path = self.root / "calls"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    # -- for the tests -------------------------------------------------------------------
    def install_kubectl(self, bin_dir: Path) -> Path:
        bin_dir.mkdir(parents=True, exist_ok=True)
        kubectl = bin_dir / "kubectl"
        kubectl.write_text(KUBECTL.format(python=sys.executable, root=str(REPO_ROOT),
                                          scripts=str(REPO_ROOT / "umbrella-scripts"), state=str(self.root)))
        kubectl.chmod(0o755)
        return kubectl

    def add_fault(self, job: str, pod_number: int, kind: str, **details) -> None:
        """On the ``pod_number``-th pod ever made for Job ``job``: ``exit`` (container=, status=),
        ``preempt`` or ``lose`` (when_file=, when_text=, stuck_for_s=)."""
        with self.locked() as state:
            state["faults"].setdefault(job, []).append({"pod": pod_number, "kind": kind, **details})

    def start(self, interval_s: float = 0.2) -> "SimCluster":
        """Run the controller in a thread, as the cluster runs its own whatever the clients do."""
        def loop():
            while not self._stop.wait(interval_s):
                self.reconcile()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop the controller and kill every pod still running (the test is over)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self.locked() as state:
            for pod in state["pods"].values():
                if pod.get("pid"):
                    try:
                        os.killpg(pod["pid"], signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass

    # -- the controller -------------------------------------------------------------------
    def reconcile(self) -> None:
        with self.locked() as state:
            for name, job in state["jobs"].items():
                self._reconcile_job(state, name, job)

    def _reconcile_job(self, state: dict, name: str, job: dict) -> None:
        pods = [state["pods"][p] for p in job["pods"] if p in state["pods"]]
        for pod in pods:
            if pod["final"] or pod.get("lost"):
                continue
            self._apply_timed_faults(state, pod)
            if pod.get("lost"):
                continue
            status = self._status(pod)
            if status["phase"] in ("Succeeded", "Failed"):
                pod["final"], pod["phase"] = True, status["phase"]
                if not job["finished"]:
                    self._judge_pod(job, pod, status)
        if job["finished"]:
            return
        if not any(not p["final"] for p in pods):  # podReplacementPolicy Failed: only once all stopped
            self._new_pod(state, name, job)

    def _status(self, pod: dict) -> dict:
        path = Path(pod["dir"]) / "status.json"
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            status = {"phase": "Pending", "containers": {}}
        if status["phase"] not in ("Succeeded", "Failed") and pod.get("pid") and not _alive(pod["pid"]):
            status = {**status, "phase": "Failed"}  # the runner died without a word: an error
        return status

    def _judge_pod(self, job: dict, pod: dict, status: dict) -> None:
        """A pod ended: Complete, or the podFailurePolicy's rules in order, then backoffLimit."""
        now = time.time()
        if status["phase"] == "Succeeded":
            job["succeeded"] = 1
            job["conditions"] = [_condition("SuccessCriteriaMet", "CompletionsReached",
                                            "Reached expected number of succeeded pods", now),
                                 _condition("Complete", "CompletionsReached",
                                            "Reached expected number of succeeded pods", now)]
            job["finished"] = True
            return
        spec = job["manifest"]["spec"]
        action, index, container, code = _match_policy(spec.get("podFailurePolicy", {}).get("rules", []), pod, status)
        if action == "Ignore":
            return
        if action == "FailJob":
            job["failed"] += 1
            message = (f"Container {container} for pod default/{pod['name']} failed with exit code {code} "
                       f"matching FailJob rule at index {index}")
            job["conditions"] = [_condition("FailureTarget", "PodFailurePolicy", message, now),
                                 _condition("Failed", "PodFailurePolicy", message, now)]
            job["finished"] = True
            return
        job["failed"] += 1
        if job["failed"] > int(spec.get("backoffLimit", 6)):
            message = "Job has reached the specified backoff limit"
            job["conditions"] = [_condition("FailureTarget", "BackoffLimitExceeded", message, now),
                                 _condition("Failed", "BackoffLimitExceeded", message, now)]
            job["finished"] = True

    def _new_pod(self, state: dict, name: str, job: dict) -> None:
        from tests.pod.harness import Pod  # the kubelet's view of a container: command, env, downward API

        number = state["pod_counts"].get(name, 0) + 1
        state["pod_counts"][name] = number
        suffix = hashlib.sha1(f"{name}-{number}-{job['uid']}".encode()).hexdigest()[:5]
        pod_name = f"{name}-{suffix}"
        directory = self.root / "pods" / pod_name
        (directory / "home").mkdir(parents=True)
        manifest = job["manifest"]
        pod_spec = manifest["spec"]["template"]["spec"]
        secrets = json.loads((self.root / "secrets.json").read_text())
        secret = next(v["secret"]["secretName"] for v in pod_spec["volumes"] if v["name"] == "rclone-config")
        env_job = SimpleNamespace(name=name)
        pod = Pod(manifest, env_job, directory / "results", directory / "repo", Path(secrets[secret]),
                  directory / "home", pod_suffix=suffix)
        containers = [{"name": c["name"], "init": True, "argv": pod.command(c["name"]), "env": pod.env(c["name"])}
                      for c in pod_spec.get("initContainers", [])]
        containers += [{"name": c["name"], "init": False, "argv": pod.command(c["name"]), "env": pod.env(c["name"])}
                       for c in pod_spec["containers"]]
        exit_faults = {f["container"]: f["status"] for f in state["faults"].get(name, [])
                       if f["pod"] == number and f["kind"] == "exit"}
        # a timed fault's trigger freezes the pod where it fires until the fault lands (podrun.py)
        hold_when = [{"file": f["when_file"], "text": f.get("when_text", "")} for f in state["faults"].get(name, [])
                     if f["pod"] == number and f["kind"] in ("preempt", "lose") and f.get("when_file")]
        plan = {"containers": containers, "grace_s": float(pod_spec.get("terminationGracePeriodSeconds", 30)),
                "exit_faults": exit_faults, "hold_when": hold_when}
        (directory / "plan.json").write_text(json.dumps(plan))
        with open(directory / "runner.log", "w") as log:
            process = subprocess.Popen([sys.executable, str(PODRUN), str(directory)], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        state["pods"][pod_name] = {"name": pod_name, "job": name, "number": number, "dir": str(directory),
                                   "pid": process.pid, "created": time.time(), "final": False,
                                   "labels": dict(manifest["spec"]["template"]["metadata"].get("labels", {})),
                                   "grace": plan["grace_s"]}
        job["pods"].append(pod_name)

    def _apply_timed_faults(self, state: dict, pod: dict) -> None:
        for fault in state["faults"].get(pod["job"], []):
            if fault["pod"] != pod["number"] or fault["kind"] not in ("preempt", "lose") or fault.get("done"):
                continue
            status = self._status(pod)
            if status["containers"].get("main", {}).get("state") != "running":
                continue
            if fault.get("when_file"):
                path = Path(pod["dir"]) / "results" / fault["when_file"]
                try:  # bytes: the file may be a DCD segment, and its presence the event
                    if fault.get("when_text", "").encode() not in path.read_bytes():
                        continue
                except OSError:
                    continue
            fault.update(done=True, on_pod=pod["name"])
            if fault["kind"] == "preempt":
                pod["disruption"] = {"reason": "PreemptionByScheduler",
                                     "message": "default-scheduler: preempting to accommodate a higher "
                                                "priority pod"}
                os.kill(pod["pid"], signal.SIGTERM)
            else:
                try:
                    os.killpg(pod["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
                requested = time.time() - float(fault.get("stuck_for_s", 600))
                pod.update(lost=True, deletionTimestamp=iso(requested + pod["grace"]))

    # -- kubectl -----------------------------------------------------------------------
    def get(self, selector: str, kinds: str) -> dict:
        wanted = dict(term.split("=", 1) for term in selector.split(",")) if selector else {}
        items = []
        with self.locked() as state:
            for name, job in sorted(state["jobs"].items()):
                labels = job["manifest"]["metadata"].get("labels", {})
                if any(labels.get(k) != v for k, v in wanted.items()):
                    continue
                items.append(_job_item(name, job, state))
                if "pods" in kinds.split(","):
                    items += [_pod_item(state["pods"][p], self._status(state["pods"][p]))
                              for p in job["pods"] if p in state["pods"] and not state["pods"][p].get("deleted")]
        if kinds == "pods":
            items = [item for item in items if item["kind"] == "Pod"]
        return {"apiVersion": "v1", "kind": "List", "items": items}

    def create(self, manifest: dict, source: str) -> tuple[int, str]:
        if (manifest.get("apiVersion"), manifest.get("kind")) != ("batch/v1", "Job"):
            return 1, f'error: unable to recognize "{source}": no matches for kind "{manifest.get("kind")}"'
        name = (manifest.get("metadata") or {}).get("name", "")
        if not _DNS_1123.match(name) or len(name) > 63:
            return 1, (f'The Job "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase '
                       f'RFC 1123 label must consist of lower case alphanumeric characters or \'-\'')
        with self.locked() as state:
            if name in state["jobs"]:
                return 1, (f'Error from server (AlreadyExists): error when creating "{source}": jobs.batch '
                           f'"{name}" already exists')
            uid = hashlib.sha1(f"{name}-{time.time()}-{len(state['created'])}".encode()).hexdigest()[:12]
            state["jobs"][name] = {"manifest": manifest, "uid": uid, "created": time.time(), "pods": [],
                                   "failed": 0, "succeeded": 0, "conditions": [], "finished": False}
            state["created"].append(name)
        return 0, f"job.batch/{name} created"

    def delete_job(self, name: str, timeout_s: float) -> tuple[int, str]:
        with self.locked() as state:
            if name not in state["jobs"]:
                return 1, f'Error from server (NotFound): jobs.batch "{name}" not found'
            state["jobs"][name]["deleting"] = True
            running = [state["pods"][p] for p in state["jobs"][name]["pods"]
                       if p in state["pods"] and not state["pods"][p]["final"]]
            for pod in running:
                if not pod.get("lost"):
                    try:
                        os.kill(pod["pid"], signal.SIGTERM)  # the kubelet stops the pod: its grace period
                    except ProcessLookupError:
                        pass
        deadline = time.monotonic() + timeout_s
        while True:
            with self.locked() as state:
                pods = [state["pods"][p] for p in state["jobs"][name]["pods"] if p in state["pods"]]
                waiting = [p for p in pods if not p["final"] and (p.get("lost") or self._status(p)["phase"]
                                                                  not in ("Succeeded", "Failed"))]
                if not waiting:
                    for pod in pods:
                        state["pods"].pop(pod["name"], None)
                    del state["jobs"][name]
                    return 0, f'job.batch "{name}" deleted'
            if time.monotonic() > deadline:
                return 1, f"error: timed out waiting for the condition on jobs/{name}"
            time.sleep(0.2)

    def delete_pod(self, name: str) -> tuple[int, str]:
        with self.locked() as state:
            pod = state["pods"].get(name)
            if pod is None or pod.get("deleted"):
                return 1, f'Error from server (NotFound): pods "{name}" not found'
            try:
                os.killpg(pod["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
            # The taint manager marked it DisruptionTarget before deleting it: the Ignore rule applies.
            pod.update(final=True, phase="Failed", deleted=True,
                       disruption={"reason": "DeletionByTaintManager", "message": "Taint manager: deleting due "
                                                                                   "to NoExecute taint"})
        return 0, (f"Warning: Immediate deletion does not wait for confirmation that the running resource has "
                   f"been terminated.\npod \"{name}\" force deleted")


def _condition(kind: str, reason: str, message: str, when: float) -> dict:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": iso(when), "lastTransitionTime": iso(when)}


def _match_policy(rules: list[dict], pod: dict, status: dict) -> tuple[str, int | None, str, int | None]:
    """(action, rule index, container, exit code) of the first rule a failed pod matches; Count when none."""
    terminated = [(name, c["exitCode"]) for name, c in status["containers"].items()
                  if c.get("state") == "terminated" and c.get("exitCode")]
    for index, rule in enumerate(rules):
        for wanted in rule.get("onPodConditions", []) or []:
            if wanted.get("type") == "DisruptionTarget" and pod.get("disruption") and \
                    str(wanted.get("status", "True")) == "True":
                return rule["action"], index, "", None
        codes = rule.get("onExitCodes")
        if codes:
            for name, code in terminated:
                if codes.get("containerName") not in (None, name):
                    continue
                inside = code in codes["values"]
                if inside == (codes.get("operator", "In") == "In"):
                    return rule["action"], index, name, code
    name, code = terminated[0] if terminated else ("main", None)
    return "Count", None, name, code


def _job_item(name: str, job: dict, state: dict) -> dict:
    manifest = job["manifest"]
    active = sum(1 for p in job["pods"] if p in state["pods"] and not state["pods"][p]["final"])
    status = {"startTime": iso(job["created"])}
    if active:
        status["active"] = active
    if job["failed"]:
        status["failed"] = job["failed"]
    if job["succeeded"]:
        status["succeeded"] = job["succeeded"]
    if job["conditions"]:
        status["conditions"] = job["conditions"]
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {**manifest["metadata"], "uid": job["uid"], "creationTimestamp": iso(job["created"])},
            "spec": manifest["spec"], "status": status}


def _pod_item(pod: dict, status: dict) -> dict:
    metadata = {"name": pod["name"], "namespace": "default",
                "labels": {**pod["labels"], "batch.kubernetes.io/job-name": pod["job"], "job-name": pod["job"]},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": pod["job"],
                                     "controller": True}],
                "creationTimestamp": iso(pod["created"])}
    conditions = []
    if pod.get("disruption"):
        conditions.append({"type": "DisruptionTarget", "status": "True", **pod["disruption"]})
    if pod.get("lost"):
        metadata.update(deletionTimestamp=pod["deletionTimestamp"], deletionGracePeriodSeconds=int(pod["grace"]))
    phase = "Running" if pod.get("lost") else status["phase"]

    def container_status(name: str) -> dict:
        found = status["containers"].get(name)
        if found is None:
            return {"name": name, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        if found["state"] == "running" or pod.get("lost"):
            return {"name": name, "restartCount": 0, "state": {"running": {"startedAt": found.get("startedAt")}}}
        return {"name": name, "restartCount": 0, "state": {"terminated": {
            "exitCode": found["exitCode"], "reason": found["reason"], "finishedAt": found["finishedAt"]}}}

    plan = json.loads((Path(pod["dir"]) / "plan.json").read_text())
    inits = [container_status(c["name"]) for c in plan["containers"] if c["init"]]
    mains = [container_status(c["name"]) for c in plan["containers"] if not c["init"]]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"nodeName": "sim-node-1", "terminationGracePeriodSeconds": int(pod["grace"])},
            "status": {"phase": phase, "conditions": conditions, "initContainerStatuses": inits,
                       "containerStatuses": mains}}


def main(state_dir: str, args: list[str]) -> int:
    """The ``kubectl`` stand-in: the calls the launcher and the follower make, refused otherwise."""
    cluster = SimCluster(Path(state_dir))
    with open(cluster.root / "calls", "a") as calls:
        calls.write(json.dumps(args) + "\n")
    cluster.reconcile()

    def answer(code: int, text: str) -> int:
        print(text, file=sys.stdout if code == 0 else sys.stderr)
        return code

    verb = args[0] if args else ""
    if verb == "get" and len(args) > 1 and args[1] in ("jobs", "pods", "jobs,pods") and "-o" in args:
        selector = args[args.index("-l") + 1] if "-l" in args else ""
        return answer(0, json.dumps(cluster.get(selector, args[1])))
    if verb == "create" and args[1:2] == ["-f"]:
        import yaml

        try:
            manifest = yaml.safe_load(Path(args[2]).read_text())
        except (OSError, yaml.YAMLError) as error:
            return answer(1, f"error: {error}")
        return answer(*cluster.create(manifest, args[2]))
    if verb == "delete" and args[1:2] == ["job"]:
        timeout = next((a.split("=", 1)[1] for a in args if a.startswith("--timeout=")), "30s")
        return answer(*cluster.delete_job(args[2], float(timeout.rstrip("s"))))
    if verb == "delete" and args[1:2] == ["pod"] and "--force" in args:
        return answer(*cluster.delete_pod(args[2]))
    return answer(2, f"simulated kubectl: unsupported call: {' '.join(args)}")
