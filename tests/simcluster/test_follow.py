"""``run-umbrella-windows.py --follow`` on a simulated cluster that runs the Jobs.

The launcher is the real script in a real git repository pushed to a local
bare remote (:class:`tests.launcher.conftest.LauncherRepo`), its IMAGE pinned
against a loopback registry; the pods run the manifests' own containers
against moto with signature checks (:mod:`tests.simcluster.cluster`). The
campaign is the smallest there is: villin in vacuum, one replica, two
windows, every length cut to a few ps.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from protbench_nrp.layout import Campaign, JobId, job_name
from protbench_nrp.records import Progress

from tests.conftest import REPRODUCIBLE_ENV
from tests.launcher.conftest import LAUNCHER, LauncherRepo, LauncherTemplate
from tests.pod.s3server import Bucket, MotoServer
from tests.simcluster.cluster import SimCluster

VILLIN = ("villin", "amber14-vacuum")
CAMPAIGN = Campaign(*VILLIN)
REMOTE = "simnrp"
SECRET = "sim-rclone"
#: Two windows (Q0 = 1.0 and 0.9) of one replica, every length cut to a few ps (as tests/campaign/test_local.py).
SHORT_ENV = {
    "PROTBENCH_PLATFORM": "CPU", "OPENMM_CPU_THREADS": "1",
    "PROTBENCH_CV_START": "1.0", "PROTBENCH_CV_END": "0.9", "PROTBENCH_UMBRELLA_K": "300",
    "PROTBENCH_STEERED_K": "5000", "PROTBENCH_PULL_LENGTH": "0.02", "PROTBENCH_PULL_FRAME": "0.2",
    "PROTBENCH_PULL_TIMESTEP": "4", "PROTBENCH_EQUIL_LENGTH": "0.001", "PROTBENCH_EQUIL_TIMESTEP": "2",
    "PROTBENCH_EQUIL_FRAME": "0.2", "PROTBENCH_PRODUCTION_LENGTH": "0.01", "PROTBENCH_FRAME": "0.2",
    "PROTBENCH_CHECKPOINT": "2", "PROTBENCH_SAVE_STATE": "4",
    # A fixed trajectory: the analysis's verdict on these short windows must not vary by chance.
    "PROTBENCH_SEED": REPRODUCIBLE_ENV["PROTBENCH_SEED"],
}


def name(stage: str, replica: int | None = None, window: int | None = None) -> str:
    return job_name("tst", *VILLIN, JobId(stage, replica, window))


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> LauncherTemplate:
    return LauncherTemplate.build(tmp_path_factory.mktemp("launcher-template"))


class Campaigner:
    """The launcher repository, its bucket and the simulated cluster of one test."""

    def __init__(self, root: Path, template: LauncherTemplate, s3: MotoServer, bucket: str, n_windows: int = 2):
        self.repo = LauncherRepo(root / "launcher", template=template)
        self.bucket = Bucket(s3, bucket).create()
        s3.rclone_config(self.repo.rclone_config, REMOTE)
        self.cluster = SimCluster(root / "cluster", {SECRET: self.repo.rclone_config})
        self.cluster.install_kubectl(self.repo.bin)  # replaces the stand-in that only keeps states
        self.repo.set_constants(TARGET=VILLIN[0], FF=VILLIN[1], N_REPLICAS=1, N_WINDOWS=n_windows, BUCKET=bucket,
                                RCLONE_REMOTE=REMOTE, RCLONE_SECRET=SECRET, EXTRA_ENV=SHORT_ENV)
        self.repo.commit("the test campaign")
        subprocess.run(["git", "push", "--quiet", "origin", "main"], cwd=self.repo.dir, check=True)
        self.cluster.start()

    def follow(self, *options: str) -> subprocess.Popen:
        env = self.repo.environment()
        env["PATH"] = f"{self.repo.bin}{os.pathsep}{env['PATH']}"
        return subprocess.Popen([sys.executable, str(self.repo.dir / LAUNCHER), "--follow", "--poll", "0.5", *options],
                                cwd=self.repo.dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)

    def journal(self) -> list[dict]:
        path = self.repo.results / CAMPAIGN.follow_journal
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def creates(self) -> dict[str, int]:
        created = self.cluster.state()["created"]
        return {job: created.count(job) for job in sorted(set(created))}

    def window_record(self, window: int) -> Progress:
        key = f"results/{CAMPAIGN.progress_file(JobId('window', 1, window))}"
        return Progress.parse(self.bucket.read(key).decode(), key)


_BUCKETS = itertools.count(1)


@pytest.fixture
def campaign(tmp_path, template, s3):
    made = Campaigner(tmp_path, template, s3, f"follow-{os.getpid()}-{next(_BUCKETS)}")
    yield made
    made.cluster.shutdown()
    made.repo.registry.stop()


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"--follow did not finish in {timeout} s:\n{output}")
    return process.returncode, output


def test_follow_takes_an_empty_bucket_to_the_report(campaign):
    """No fault: setup, steered MD, both windows, each submitted once, then the analysis and report."""
    code, output = finish(campaign.follow())
    assert campaign.creates() == {name("setup"): 1, name("steered", 1): 1, name("window", 1, 0): 1,
                                  name("window", 1, 1): 1}, output
    for window in (0, 1):
        assert campaign.window_record(window).phase == "finished"
    actions = [(entry["action"], entry["job"]) for entry in campaign.journal()]
    assert actions[0] == ("submit", name("setup"))
    assert [a for a, _ in actions].count("submit") == 4 and actions[-1][0] == "done"
    # the journal reaches the bucket too
    uploaded = campaign.bucket.read(f"results/{CAMPAIGN.follow_journal}").decode()
    assert uploaded.splitlines() == (campaign.repo.results / CAMPAIGN.follow_journal).read_text().splitlines()
    assert "all Jobs finished; analysing" in output
    assert code == 0, output
    assert (campaign.repo.results / CAMPAIGN.analysis_file("report.html")).exists(), output
    # --status, beside the cluster's states, shows the journal's last actions under its table
    shown = campaign.repo.run("--status")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    last = [line.split() for line in shown.stdout.split("Last actions of --follow (", 1)[1].splitlines()[1:]]
    assert [words[1:3] for words in last] == [
        ["submit", f"{job}:"] for job in (name("setup"), name("steered", 1), name("window", 1, 0),
                                         name("window", 1, 1))] + [["done", f"{CAMPAIGN.name}:"]], shown.stdout


@pytest.mark.parametrize("options, needle", [
    (("--poll", "0"), "--poll 0 must be a number of seconds above 0"),
    (("--poll", "-5"), "--poll -5 must be a number of seconds above 0"),
    (("--max-attempts", "0"), "--max-attempts 0 must be at least 1"),
    (("--max-gpu-hours", "0"), "--max-gpu-hours 0 must be a number of GPU-hours above 0"),
    (("--max-gpu-hours", "-2"), "--max-gpu-hours -2 must be a number of GPU-hours above 0"),
    (("--stage", "setup", "--windows", "1"), "--windows names no Job of stage setup"),
    (("--stage", "steered", "--windows", "1"), "--windows names no Job of stage steered"),
])
def test_bad_follow_input_is_refused_before_anything_is_submitted(tmp_path, template, options, needle):
    repo = LauncherRepo(tmp_path, template=template)
    try:
        result = repo.run("--follow", *options)
    finally:
        repo.registry.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert needle in result.stderr and "Nothing was applied" in result.stderr, result.stderr
    assert repo.kubectl_calls() == [] and not repo.results.exists()
