"""Running a rendered Job's containers outside Kubernetes (tests and benchmarks).

A :class:`Pod` is one Job manifest rendered by the real launcher code from the
real ``k8s_template.yaml``; its containers' ``command`` + ``args`` (and the
main container's preStop hook) run here exactly as written, with the
manifest's environment, only the mount points (``PROTBENCH_RESULTS_DIR``,
``PROTBENCH_REPO_DIR``, ``RCLONE_CONFIG``) pointed at local directories.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, REPRODUCIBLE_ENV, VILLIN_FF, CampaignInputs
from tests.pod.s3server import Bucket

VENV_BIN = Path(sys.executable).parent
#: The main image's user: the Job template runs every container as this uid.
POD_UID = 57439
REMOTE = "podtest"
POD_SCRIPTS = Path("umbrella-scripts") / "pod"
#: The node every simulated pod runs on (downward API spec.nodeName).
NODE_NAME = "test-node-1"
_QUANTITY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9,
                      "T": 10**12, "m": 1e-3}


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity (``8Gi``, ``2400m``, ``1``) as a number."""
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if str(text).endswith(suffix):
            return float(str(text)[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
    return float(text)

#: Environment of the real window script in tests: seconds of MD on the CPU, the same
#: trajectory every run (REPRODUCIBLE_ENV). 10 frames of 50 steps, a checkpoint (and DCD
#: segment) every 5 frames.
TINY_WINDOW = {
    **REPRODUCIBLE_ENV,
    "PROTBENCH_PLATFORM": "CPU",
    "PROTBENCH_EQUIL_LENGTH": "0.0001",
    "PROTBENCH_EQUIL_FRAME": "0.05",
    "PROTBENCH_PRODUCTION_LENGTH": "0.002",
    "PROTBENCH_FRAME": "0.2",
    "PROTBENCH_CHECKPOINT": "1.0",
    "PROTBENCH_SAVE_STATE": "1.0",
    "PROTBENCH_CHECKPOINT_MINUTES": "15",
}

#: A stand-in for a simulation script: writes one reporter line per "frame";
#: on SIGTERM it finishes the frame, writes its checkpoint and a marker, exits 143.
FAKE_SCRIPT = """#!/usr/bin/env bash
set -u
dir="$2/$FAKE_OUTPUT_DIR"
mkdir -p "$dir"
stop=""
trap 'stop=1' TERM
i=0
while [ "$i" -lt "${FAKE_FRAMES:-40}" ] && [ -z "$stop" ]; do
    echo "frame $i" >>"$dir/fake-production.out"
    i=$((i + 1))
    sleep "${FAKE_FRAME_SECONDS:-0.05}"
done
echo "checkpoint at frame $i" >"$dir/fake-production.chk"
if [ -n "$stop" ]; then
    echo "$i" >"$dir/fake-term-received"
    exit 143
fi
exit "${FAKE_EXIT:-0}"
"""


def seed_inputs(bucket: Bucket, inputs: CampaignInputs) -> None:
    """Put a campaign's setup and replica-1 inputs in the bucket, as earlier stages would."""
    campaign = inputs.campaign
    bucket.put_tree(inputs.root, str(campaign.setup_dir))
    bucket.put_tree(inputs.root, str(campaign.steered_state(1)))
    for window in range(inputs.n_windows):
        bucket.put_tree(inputs.root, str(campaign.window_pdb(1, window)))


def campaign_config(bucket_name: str, stage: str = "window", replicas=(1,), windows=(0,)):
    """The launcher's constants for the villin campaign of the tests, its bucket on the test server."""
    from protbench_nrp.jobs import CampaignConfig

    return CampaignConfig(
        initials="pt", target="villin", ff=VILLIN_FF, n_replicas=max(replicas), n_windows=31, stage=stage,
        replicas=tuple(replicas), windows=tuple(windows) if stage == "window" else None,
        bucket=bucket_name, rclone_remote=REMOTE, rclone_secret="pod-test-rclone",
        openeye_secret="pod-test-oe", image="registry.invalid/protbench:test",
        repo_url="https://git.invalid/protbench.git", proteinbenchmark_ref="main",
        cuda_version="12.4")


def render_job(bucket_name: str, stage: str = "window", replica: int = 1, window: int = 0):
    """A Job manifest rendered by the launcher from k8s_template.yaml, and its JobSpec."""
    from protbench_nrp.jobs import build_jobs
    from protbench_nrp.manifest import load_template, render_manifest

    config = campaign_config(bucket_name, stage, (replica,), (window,))
    [job] = build_jobs(config, commit="0" * 40)
    manifest = render_manifest(job, config, load_template(REPO_ROOT / "k8s_template.yaml"))
    return manifest, job


@dataclass
class Pod:
    """One rendered Job, run outside Kubernetes.

    Attributes
    ----------
    manifest : dict
    job : JobSpec
    results, repo, rclone_config, home : Path
        What the pod's volumes would be.
    transcript : list of str
        Every output of every command run, for checks that span them (secrets).
    """

    manifest: dict
    job: object
    results: Path
    repo: Path
    rclone_config: Path
    home: Path
    transcript: list = field(default_factory=list)
    pod_suffix: str = "x7k2p"

    # -- the manifest -------------------------------------------------------
    @property
    def spec(self) -> dict:
        return self.manifest["spec"]["template"]["spec"]

    def container(self, name: str) -> dict:
        for container in self.spec.get("initContainers", []) + self.spec["containers"]:
            if container["name"] == name:
                return container
        raise KeyError(f"the manifest has no container {name!r}")

    def command(self, name: str) -> list[str]:
        container = self.container(name)
        return list(container.get("command", [])) + list(container.get("args", []))

    def prestop_command(self) -> list[str]:
        return list(self.container("main")["lifecycle"]["preStop"]["exec"]["command"])

    @property
    def output_files(self) -> list[str]:
        return self.job.env["PROTBENCH_OUTPUT_FILES"].splitlines()

    def env(self, name: str = "main", **extra: str) -> dict[str, str]:
        """The container's environment, with the volumes pointed at this pod's directories."""
        env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
               "HOME": str(self.home), "LANG": "C.UTF-8", "TMPDIR": str(self.home)}
        env.update({item["name"]: self._env_value(name, item) for item in self.container(name).get("env", [])})
        env.update(PROTBENCH_RESULTS_DIR=str(self.results), PROTBENCH_REPO_DIR=str(self.repo),
                   RCLONE_CONFIG=str(self.rclone_config), PROTBENCH_PROTEINBENCHMARK_REF="")
        env.update(extra)
        return env

    def _env_value(self, container: str, item: dict) -> str:
        """An env entry's value; downward API references resolved as the kubelet would."""
        if "value" in item:
            return item["value"]
        source = item["valueFrom"]
        if "fieldRef" in source:
            return {"metadata.name": self.pod_name, "spec.nodeName": NODE_NAME,
                    "metadata.namespace": "default"}[source["fieldRef"]["fieldPath"]]
        resource = source["resourceFieldRef"]
        kind, _, quantity = resource["resource"].partition(".")
        value = self.container(resource.get("containerName", container))["resources"][kind][quantity]
        return str(int(parse_quantity(value) / parse_quantity(resource.get("divisor", "1"))))

    @property
    def pod_name(self) -> str:
        """The name Kubernetes gives a Job's pod: the Job's name and a random suffix."""
        return f"{self.job.name}-{self.pod_suffix}"

    # -- running ------------------------------------------------------------
    def run(self, name: str, *, timeout: float = 180, prefix: tuple = (), **extra: str):
        """Run a container's command to completion; returns the CompletedProcess (text)."""
        return self._run(list(prefix) + self.command(name), self.env(name, **extra), timeout)

    def run_prestop(self, *, timeout: float = 120, **extra: str):
        return self._run(self.prestop_command(), self.env("main", **extra), timeout)

    def copy_out(self, reason: str = "final", *, timeout: float = 120, **extra: str):
        """The upload run-job.sh runs: copy-out.sh with the main container's environment."""
        script = self.repo / POD_SCRIPTS / "copy-out.sh"
        return self._run(["bash", str(script), reason], self.env("main", **extra), timeout)

    def _run(self, argv, env, timeout):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        self.transcript += [result.stdout, result.stderr]
        return result

    def start(self, name: str = "main", log: Path | None = None, **extra: str) -> "RunningContainer":
        """Start a container's command in the background (its own process group)."""
        log = log or self.home / f"{name}.log"
        handle = open(log, "w")
        process = subprocess.Popen(self.command(name), env=self.env(name, **extra), stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        return RunningContainer(process, log, handle, self)


@dataclass
class RunningContainer:
    process: subprocess.Popen
    log: Path
    handle: object
    pod: Pod

    def output(self) -> str:
        return self.log.read_text()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 120) -> int:
        try:
            status = self.process.wait(timeout=timeout)
        finally:
            self.handle.close()
            self.pod.transcript.append(self.log.read_text())
        return status

    def kill_group(self) -> None:
        """Kill the container and every process it started, like a lost node."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self.handle.close()


def make_fake_repo(root: Path, script_path: str, body: str = FAKE_SCRIPT) -> Path:
    """A checkout holding the real pod scripts and a stand-in at ``script_path``."""
    shutil.copytree(REPO_ROOT / POD_SCRIPTS, root / POD_SCRIPTS)
    script = root / script_path
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(body)
    script.chmod(0o755)  # git keeps a script's executable bit; this is that bit
    return root


#: For tests that check the pod's users and permissions: only root can switch
#: users and hand files to the pod's uid, and without that they would check nothing.
requires_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="switching to the pod's uid and setting up fsGroup volumes needs root "
                              "(CI runs as root)")


def as_pod_user() -> tuple[str, ...]:
    """Command prefix running as the pod's uid, with fsGroup's group (root only: see requires_root)."""
    _check_root()
    return ("setpriv", f"--reuid={POD_UID}", f"--regid={POD_UID}", f"--groups={POD_UID}", "--")


def fs_group_volume(path: Path, owner: bool = False) -> None:
    """Set ``path`` up as the kubelet does for a pod with ``fsGroup`` (root only: see requires_root).

    A volume's directory stays root's, is given to the group and made
    group-writable with the set-group-ID bit; ``owner`` instead hands a file
    or directory to the pod's user (what a process of the pod created).
    """
    _check_root()
    if owner:
        os.chown(path, POD_UID, POD_UID)
    else:
        os.chown(path, 0, POD_UID)
        path.chmod(0o2775)


def _check_root() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("only root can act as the pod's user; mark the test @requires_root")
