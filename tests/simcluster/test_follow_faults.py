"""``--follow`` through faults, on the simulated cluster: one campaign carries them all.

Four windows of one replica, each with its own fault:

* window 0: its first pod is preempted during production (``DisruptionTarget``
  and SIGTERM, once its first production segment is written); the next pod
  resumes, and is lost with its node (SIGKILL, no upload, stuck Terminating):
  the follower force-deletes it and relaunches the Job;
* window 1: its main container exits 1 on its first two pods (the Count rule;
  ``backoffLimit`` 10 is not reached), then its third pod finishes;
* window 2: its main container exits 65, a blow-up (FailJob): never relaunched;
* window 3: every pod's ``init-git`` exits 75 (transient, Count): each Job
  reaches ``BackoffLimitExceeded`` and is relaunched, until ``--max-attempts``.

Two followers run at once on the same results tree; one of them is
SIGKILLed once the journal has its third line, then started again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from protbench_nrp import exits
from protbench_nrp.engine import read_production_frames
from protbench_nrp.jobs import EXIT_STOPPED
from protbench_nrp.reporters import read_cv_file

from tests.engine.test_window import assert_window_exact
from tests.simcluster.test_follow import CAMPAIGN, Campaigner, finish, name, s3, template  # noqa: F401

MAX_ATTEMPTS = 3
#: The template's backoffLimit: each attempt of window 3 is this many counted failures, plus one.
BACKOFF_LIMIT = 10
#: SHORT_ENV's production: 10 ps in frames of 0.2 ps at 4 fs, segments of 2 ps.
N_FRAMES, FRAME_STEPS, PER_SEGMENT = 50, 50, 10
#: The journal line after which follower A is SIGKILLed.
KILL_AT_LINE = 3


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, template, s3):  # noqa: F811
    root = tmp_path_factory.mktemp("faults")
    made = Campaigner(root, template, s3, f"follow-faults-{os.getpid()}", n_windows=4)
    cluster = made.cluster
    # The preemption must land during production (0 < stopped frame < N_FRAMES), some 40 frames
    # (~2 s of CPU) before its end. The controller polls every 0.2 s, and on a loaded machine a pass
    # can come later than that; so the trigger freezes the pod (SIGSTOP, by the stand-in kubelet
    # that watches for it every 20 ms) the moment segment 1 appears, and the pod runs again only
    # with its SIGTERM. Where it stops no longer depends on when the controller gets to it, and the
    # campaign takes no longer (a larger margin, a longer production, would cost every run).
    segment_1 = str(CAMPAIGN.window_files(1, 0).production_segment(1))
    cluster.add_fault(name("window", 1, 0), 1, "preempt", when_file=segment_1)
    cluster.add_fault(name("window", 1, 0), 2, "lose", when_file=segment_1, stuck_for_s=3600)
    for pod in (1, 2):
        cluster.add_fault(name("window", 1, 1), pod, "exit", container="main", status=1)
    cluster.add_fault(name("window", 1, 2), 1, "exit", container="main", status=exits.EXIT_BLOWN_UP)
    for pod in range(1, MAX_ATTEMPTS * (BACKOFF_LIMIT + 1) + 1):
        cluster.add_fault(name("window", 1, 3), pod, "exit", container="init-git", status=exits.EXIT_TRANSIENT)
    options = ("--max-attempts", str(MAX_ATTEMPTS))
    started = time.monotonic()
    first, other = made.follow(*options), made.follow(*options)
    journal = made.repo.results / CAMPAIGN.follow_journal
    while not (journal.exists() and len(journal.read_text().splitlines()) >= KILL_AT_LINE):
        assert first.poll() is None and time.monotonic() - started < 180, first.communicate()[0]
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    killed_output = first.communicate()[0]
    again = made.follow(*options)
    results = {"again": finish(again), "other": finish(other)}
    made.killed_output = killed_output
    made.results = results
    made.output = "\n".join([killed_output] + [out for _, out in results.values()])
    made.wall_s = time.monotonic() - started
    yield made
    cluster.shutdown()
    made.repo.registry.stop()


def job_lines(journal: list[dict], job: str, *actions: str) -> list[dict]:
    return [entry for entry in journal if entry["job"] == job and entry["action"] in actions]


def test_both_followers_stop_with_a_summary_naming_the_blow_up_and_the_cap(faulty):
    for code, output in faulty.results.values():
        assert code == EXIT_STOPPED, output
        assert "--follow stops: nothing more can progress" in output, output
        assert "window: 2 finished, 2 failed" in output, output
        assert f"failed   replica 1 window 02 ({name('window', 1, 2)}): podFailurePolicy rule 1 (FailJob): " \
               f"{exits.describe(exits.EXIT_BLOWN_UP)}" in output, output
        assert f"failed   replica 1 window 03 ({name('window', 1, 3)}): {MAX_ATTEMPTS} attempts" in output, output


def test_a_blow_up_is_never_relaunched_and_is_reported_with_its_meaning_and_fix(faulty):
    journal = faulty.journal()
    window = name("window", 1, 2)
    assert faulty.creates()[window] == 1
    assert not job_lines(journal, window, "relaunch")
    failed = job_lines(journal, window, "failed")
    assert failed, journal
    meaning = exits.BY_CODE[exits.EXIT_BLOWN_UP].meaning
    assert all("exit 65" in line["reason"] and meaning in line["reason"] and "never relaunched" in line["reason"]
               and "--relaunch it" in line["reason"] for line in failed), failed


def test_counted_failures_within_the_backoff_limit_are_kubernetes_own_retries(faulty):
    window = name("window", 1, 1)
    assert faulty.creates()[window] == 1 and faulty.cluster.state()["pod_counts"][window] == 3
    assert faulty.window_record(1).phase == "finished"
    assert not job_lines(faulty.journal(), window, "relaunch", "failed", "gave-up")


def test_backoff_limit_exceeded_is_relaunched_up_to_the_cap_then_given_up(faulty):
    journal = faulty.journal()
    window = name("window", 1, 3)
    # every attempt is one Job with backoffLimit + 1 failed pods, then BackoffLimitExceeded
    relaunches = job_lines(journal, window, "relaunch")
    assert relaunches and all("backoffLimit (10) reached by counted failures" in r["reason"] for r in relaunches)
    assert faulty.cluster.state()["pod_counts"][window] == faulty.creates()[window] * (BACKOFF_LIMIT + 1)
    gave_up = job_lines(journal, window, "gave-up")
    assert gave_up and all(f"it has had {MAX_ATTEMPTS} attempts, the cap (--max-attempts {MAX_ATTEMPTS})"
                           in line["reason"] for line in gave_up), gave_up


def test_a_preempted_then_lost_window_is_relaunched_and_its_frames_are_an_undisturbed_runs(faulty, tmp_path):
    window = name("window", 1, 0)
    state = faulty.cluster.state()
    preempted, lost = (next(f["on_pod"] for f in state["faults"][window] if f["kind"] == kind)
                       for kind in ("preempt", "lose"))
    journal = faulty.journal()
    relaunch = job_lines(journal, window, "relaunch")
    assert len(relaunch) == 1 and f"its pod is stuck on a lost node: {lost} on sim-node-1" in relaunch[0]["reason"]
    assert ["delete", "pod", lost, "--force", "--grace-period=0"] in faulty.cluster.calls()
    assert faulty.creates()[window] == 2
    assert faulty.window_record(0).phase == "finished"
    pods = faulty.cluster.root / "pods"
    assert "stopped by signal 15" in (pods / preempted / "main.log").read_text()

    files = CAMPAIGN.window_files(1, 0)
    final = tmp_path / "final"
    faulty.bucket.download_tree(str(files.directory), final)
    (final / files.start_pdb).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(pods / preempted / "results" / files.start_pdb, final / files.start_pdb)
    frames, cv = assert_window_exact(final, files, N_FRAMES, FRAME_STEPS, PER_SEGMENT)

    # The undisturbed run: from what the preempted pod held when it stopped, the same script and
    # environment, never interrupted. The CPU platform in vacuum with one thread is deterministic,
    # and a checkpoint carries the integrator's random state: every frame must match to the bit.
    reference = tmp_path / "reference"
    shutil.copytree(pods / preempted / "results", reference)
    stopped_at = len(read_production_frames(reference, files))
    assert 0 < stopped_at < N_FRAMES, stopped_at
    plan = json.loads((pods / preempted / "plan.json").read_text())
    main = next(c for c in plan["containers"] if c["name"] == "main")
    script = pods / preempted / "repo" / main["env"]["PROTBENCH_SCRIPT_PATH"]
    done = subprocess.run(["python", str(script), "-o", str(reference)], env=main["env"], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = read_production_frames(reference, files)
    np.testing.assert_array_equal(frames.steps, expected.steps)
    assert frames.positions_nm.tobytes() == expected.positions_nm.tobytes()
    assert (final / files.cv_timeseries).read_bytes() == (reference / files.cv_timeseries).read_bytes()
    assert np.array_equal(cv, read_cv_file(reference / files.cv_timeseries)[1])


def test_no_job_is_created_twice_by_a_killed_or_a_second_follower(faulty):
    journal = faulty.journal()
    creates = faulty.creates()
    # a Job without a fault is created once, whichever follower, before or after the kill, got to it
    for job in (name("setup"), name("steered", 1), name("window", 1, 1), name("window", 1, 2)):
        assert creates[job] == 1, (job, creates)
    assert creates[name("window", 1, 0)] == 2  # its first launch and the lost node's relaunch
    assert creates[name("window", 1, 3)] == MAX_ATTEMPTS
    # every create is in the journal, but the one the kill may have cut off before its line
    unjournaled = {job: count - len(job_lines(journal, job, "submit", "relaunch")) for job, count in creates.items()}
    assert all(n in (0, 1) for n in unjournaled.values()) and sum(unjournaled.values()) <= 1, unjournaled
    # followers of one tree take turns: none is answered AlreadyExists, and no create call is lost
    # but the one the kill may have cut off
    creates_called = sum(1 for call in faulty.cluster.calls() if call[:1] == ["create"])
    assert creates_called - sum(creates.values()) in (0, 1)
    assert not [entry for entry in journal if entry["action"] == "exists"]
    print(f"fault campaign: {faulty.wall_s:.0f} s; creates {creates}")
