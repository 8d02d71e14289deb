"""Uploads killed midway leave a bucket a fresh pod resumes from exactly, with the real window script.

One window's life across three containers of one pod and then a new pod:

1. pod A runs, is stopped (SIGTERM) and uploads completely;
2. pod A's container restarts, resumes, is stopped, and its upload is killed
   (like a lost node) after the first reporter arrived;
3. it restarts again, is stopped, and the upload is killed after all
   reporters arrived but before the states;
4. pod B starts from the bucket alone and finishes the window.

After every kill the bucket's checkpoint claims no more frames than its
trajectory, state data and CV files hold, and pod B resumes from that
checkpoint (no fallback) and ends with every frame exactly once. (With
``restartPolicy: Never`` a retry is always a new pod; steps 2 and 3 keep the
volume only to place the kills inside an upload.)

Where a test needs the bucket to hold a checkpoint the window has not passed
yet, it pauses the window script (SIGSTOP, as a stalled node would) until the
periodic upload has carried that checkpoint, rather than racing the script:
what happens is decided by what was written, on any machine.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.pod.harness import TINY_WINDOW, seed_inputs

WINDOW = 0
# 100 frames of 50 steps, a checkpoint and DCD segment every 5 frames: room for three stops
SETTINGS = {**TINY_WINDOW, "PROTBENCH_PRODUCTION_LENGTH": "0.02", "PROTBENCH_SYNC_MINUTES": "0"}
# slow enough that a kill lands inside the upload, fast enough for a test
SLOW_UPLOAD = {"RCLONE_BWLIMIT": "60k", "RCLONE_TRANSFERS": "2"}


def _schedule(settings=SETTINGS):
    from protbench_nrp import science
    from protbench_nrp.engine import Schedule

    return Schedule.from_times(float(settings["PROTBENCH_PRODUCTION_LENGTH"]), science.TIMESTEP_FS,
                               float(settings["PROTBENCH_FRAME"]), float(settings["PROTBENCH_CHECKPOINT"]),
                               float(settings["PROTBENCH_SAVE_STATE"]))


def _frames(root: Path, files, settings=SETTINGS) -> tuple[int | None, int]:
    """(frames the portable checkpoint claims, frames every reporter holds) of a results tree."""
    from protbench_nrp import science
    from protbench_nrp.engine import frames_held, state_xml_step
    from protbench_nrp.reporters import CVReporter, SegmentedDCDReporter, StateDataReporter

    schedule = _schedule(settings)
    reporters = [
        SegmentedDCDReporter(lambda k: root / files.production_segment(k), None, schedule.frame_steps,
                             science.TIMESTEP_FS / 1000.0, frames_per_segment=schedule.checkpoint_frames,
                             stray_glob=files.production_segment_glob),
        StateDataReporter(root / files.production("out"), None),
        CVReporter(root / files.cv_timeseries, None),
    ]
    step = state_xml_step(root / files.portable_checkpoint)
    return (None if step is None else step // schedule.frame_steps), frames_held(reporters, schedule)


def _bucket_frames(bucket, files, where: Path, settings=SETTINGS) -> tuple[int | None, int]:
    bucket.download_tree(str(files.directory), where)
    return _frames(where, files, settings)


def _segments(pod, files) -> int:
    return len(list((pod.results / files.directory).glob(files.production_segment_glob)))


def _wait_for(predicate, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _run_then_stop(pod, files, more_segments: int, log: Path, upload=SLOW_UPLOAD):
    """Start the main container, let the window write ``more_segments`` segments, SIGTERM it."""
    start = _segments(pod, files)
    main = pod.start("main", log=log, **SETTINGS, **upload)
    _wait_for(lambda: _segments(pod, files) >= start + more_segments or main.process.poll() is not None,
              what="production segments")
    main.signal(signal.SIGTERM)
    _wait_for(lambda: "script exited with status 143" in main.output(), what="the checkpoint")
    return main


def _script_pid(main, script: str = "run-umbrella-window.py") -> int:
    """The window script run-job.sh started: its child whose command line names ``script``."""
    def find():
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                command = (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if parent == main.process.pid and script.encode() in command:
                return int(entry.name)
        return None

    _wait_for(lambda: find() is not None or main.process.poll() is not None, what=f"{script} to start")
    assert main.process.poll() is None, main.output()
    return find()


def _checkpoint_step(path: Path) -> int:
    """Step of the production's portable checkpoint at ``path``; 0 when there is none yet."""
    from protbench_nrp.engine import state_xml_step

    return state_xml_step(path) or 0


def _bucket_checkpoint_step(bucket, files, where: Path) -> int:
    """Step of the portable checkpoint the bucket holds; 0 when it holds none."""
    key = f"results/{files.portable_checkpoint}"
    if key not in bucket.version_counts(key):
        return 0
    where.write_bytes(bucket.read(key))
    return _checkpoint_step(where)


def _paused_until_uploaded(pod, main, bucket, files, where: Path) -> tuple[int, int]:
    """Pause the window script after its first production checkpoint until a sync uploaded it.

    Returns ``(script pid, the checkpoint's step)``; the caller sends SIGCONT.
    """
    local = pod.results / files.portable_checkpoint
    script = _script_pid(main)
    first = _schedule().checkpoint_frames * _schedule().frame_steps
    _wait_for(lambda: _checkpoint_step(local) >= first or main.process.poll() is not None,
              what="the first production checkpoint")
    os.kill(script, signal.SIGSTOP)
    step = _checkpoint_step(local)
    assert main.process.poll() is None and step >= first, main.output()
    _wait_for(lambda: _bucket_checkpoint_step(bucket, files, where) == step,
              what=f"a periodic upload of the checkpoint at step {step}")
    return script, step


def _upload_running(pod) -> bool:
    """Whether copy-out.sh holds the pod's upload lock now (taking it for an instant if free)."""
    lock = pod.results / ".protbench-pod" / "upload.lock"
    if not lock.exists():
        return False
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _keys(bucket, files, pattern: str) -> dict[str, int]:
    prefix = f"results/{files.directory}/"
    return {k: n for k, n in bucket.version_counts(prefix).items() if pattern in k}


@pytest.mark.slow
def test_killed_uploads_leave_a_bucket_that_resumes_exactly(make_pod, bucket, villin_inputs, tmp_path):
    seed_inputs(bucket, villin_inputs)
    files = villin_inputs.campaign.window_files(1, WINDOW)
    pod = make_pod(window=WINDOW, name="pod-a")
    assert pod.run("init-rclone").returncode == 0

    # 1. a complete upload after SIGTERM (at full speed: no kill has to land inside it)
    main = _run_then_stop(pod, files, 2, tmp_path / "a1.log", upload={})
    assert main.wait(timeout=120) == 143, main.output()
    claimed, held = _bucket_frames(bucket, files, tmp_path / "after-1")
    assert claimed is not None and 0 < claimed <= held

    # 2. the container restarts, resumes, stops; its upload dies after the first reporter arrived
    states_before = _keys(bucket, files, ".xml") | _keys(bucket, files, ".chk")
    uploads_before = sum(bucket.version_counts().values())
    main = _run_then_stop(pod, files, 2, tmp_path / "a2.log")
    _wait_for(lambda: sum(bucket.version_counts().values()) > uploads_before, what="a first upload")
    main.kill_group()
    assert _keys(bucket, files, ".xml") | _keys(bucket, files, ".chk") == states_before
    claimed_2, held_2 = _bucket_frames(bucket, files, tmp_path / "after-2")
    assert claimed_2 == claimed and held_2 >= claimed_2

    # 3. again, killed after every reporter arrived but before the states
    main = _run_then_stop(pod, files, 2, tmp_path / "a3.log")
    _wait_for(lambda: "uploaded" in main.output() and "reporters file(s)" in main.output(),
              what="the reporters' upload")
    main.kill_group()
    assert _keys(bucket, files, ".xml") | _keys(bucket, files, ".chk") == states_before, \
        "the kill came too late to test the moment between reporters and states"
    claimed_3, held_3 = _bucket_frames(bucket, files, tmp_path / "after-3")
    local_claimed, local_held = _frames(pod.results, files)
    assert held_3 >= local_claimed > claimed_3 == claimed  # newer reporters, older states

    # 4. a new pod from the bucket alone: resumes from the bucket's checkpoint and finishes
    fresh = make_pod(window=WINDOW, name="pod-b")
    assert fresh.run("init-rclone").returncode == 0
    finish = fresh.start("main", log=tmp_path / "b.log", **SETTINGS)
    assert finish.wait(timeout=300) == 0, finish.output()
    log = finish.output()
    assert "skipped" not in log  # the newest checkpoint was usable: no fallback to older states
    schedule = _schedule()
    assert f"starting from checkpoint {Path(files.production('chk')).name} at step " \
           f"{claimed * schedule.frame_steps}" in log

    final = tmp_path / "final"
    bucket.download_tree(str(files.directory), final)
    _assert_every_frame_once(final, files, schedule)


def _assert_every_frame_once(root: Path, files, schedule) -> None:
    from protbench_nrp.engine import read_production_frames
    from protbench_nrp.reporters import read_cv_file

    expected = (np.arange(schedule.total_frames) + 1) * schedule.frame_steps
    trajectory = read_production_frames(root, files)
    np.testing.assert_array_equal(trajectory.steps, expected)
    cv_steps, _ = read_cv_file(root / files.cv_timeseries)
    np.testing.assert_array_equal(cv_steps, expected)
    rows = [line for line in (root / files.production("out")).read_text().splitlines()
            if line and not line.startswith("#")]
    np.testing.assert_array_equal([int(row.split(",")[0]) for row in rows], expected)



@pytest.mark.slow
def test_a_node_lost_during_periodic_uploads_costs_only_time(make_pod, bucket, villin_inputs, tmp_path):
    # No preStop, no SIGTERM: everything of the pod dies at once while an upload runs.
    seed_inputs(bucket, villin_inputs)
    files = villin_inputs.campaign.window_files(1, WINDOW)
    pod = make_pod(window=WINDOW, name="lost")
    assert pod.run("init-rclone").returncode == 0
    # 40 frames; the node is lost soon after the second checkpoint (frame 10), well before the end
    longer = {**SETTINGS, "PROTBENCH_PRODUCTION_LENGTH": "0.008"}
    main = pod.start("main", log=tmp_path / "lost.log", **{**longer, "PROTBENCH_SYNC_MINUTES": "0.002"})
    script, uploaded = _paused_until_uploaded(pod, main, bucket, files, tmp_path / "bucket-checkpoint.xml")
    os.kill(script, signal.SIGCONT)
    local = pod.results / files.portable_checkpoint
    _wait_for(lambda: (_checkpoint_step(local) > uploaded and _upload_running(pod))
              or main.process.poll() is not None, what="a newer checkpoint while an upload runs")
    assert main.process.poll() is None, main.output()
    main.kill_group()

    claimed, held = _bucket_frames(bucket, files, tmp_path / "bucket", longer)
    assert claimed is not None and uploaded // _schedule().frame_steps <= claimed <= held

    fresh = make_pod(window=WINDOW, name="after")
    assert fresh.run("init-rclone").returncode == 0
    finish = fresh.start("main", log=tmp_path / "after.log", **longer)
    assert finish.wait(timeout=300) == 0, finish.output()
    assert "skipped" not in finish.output()
    final = tmp_path / "final"
    bucket.download_tree(str(files.directory), final)
    _assert_every_frame_once(final, files, _schedule(longer))


@pytest.mark.slow
def test_a_finished_window_whose_final_upload_failed_is_finished_by_the_next_pod(make_pod, bucket, villin_inputs,
                                                                                 tmp_path, s3, closed_port):
    # restartPolicy Never: the retry of a pod that exited 75 is a new pod with an empty volume.
    from protbench_nrp.records import Progress

    seed_inputs(bucket, villin_inputs)
    files = villin_inputs.campaign.window_files(1, WINDOW)
    # 40 frames. The bucket goes once it holds the first checkpoint, while the script is paused
    # there: it never gets the end, however fast this machine simulates or uploads.
    longer = {**SETTINGS, "PROTBENCH_PRODUCTION_LENGTH": "0.008"}
    pod = make_pod(window=WINDOW, name="uploads-fail")
    assert pod.run("init-rclone").returncode == 0
    main = pod.start("main", log=tmp_path / "a.log", **{**longer, "PROTBENCH_SYNC_MINUTES": "0.002"},
                     PROTBENCH_TRANSFER_TRIES="2", PROTBENCH_TRANSFER_RETRY_SECONDS="0.1", RCLONE_RETRIES="1",
                     RCLONE_LOW_LEVEL_RETRIES="1", RCLONE_CONTIMEOUT="2s")
    script, uploaded = _paused_until_uploaded(pod, main, bucket, files, tmp_path / "bucket-checkpoint.xml")
    refused = "copy-out(sync): ERROR: uploading to"
    before = main.output().count(refused)
    s3.rclone_config(pod.rclone_config, "podtest", endpoint=f"http://127.0.0.1:{closed_port}")  # the bucket goes
    # an upload with the new config failed: syncs run one at a time, so none still in flight
    # can reach the bucket (and the paused script has written nothing newer meanwhile)
    _wait_for(lambda: main.output().count(refused) > before, what="a periodic upload to fail")
    os.kill(script, signal.SIGCONT)
    assert main.wait(timeout=300) == 75, main.output()
    assert "exiting 75 so the Job starts a new pod" in main.output()
    claimed, held = _bucket_frames(bucket, files, tmp_path / "bucket", longer)
    schedule = _schedule(longer)
    assert claimed == uploaded // schedule.frame_steps < schedule.total_frames  # the bucket lacks the end
    assert held >= claimed

    fresh = make_pod(window=WINDOW, name="next")
    assert fresh.run("init-rclone").returncode == 0
    finish = fresh.start("main", log=tmp_path / "b.log", **longer)
    assert finish.wait(timeout=300) == 0, finish.output()
    assert f"starting from checkpoint {Path(files.production('chk')).name} at step " \
           f"{claimed * schedule.frame_steps}" in finish.output()  # only what the bucket lacked runs again
    final = tmp_path / "final"
    bucket.download_tree(str(files.directory), final)
    _assert_every_frame_once(final, files, schedule)
    assert Progress.read(final / files.progress).phase == "finished"

    # A later pod (a preemption after the upload, say) finds the window finished and changes nothing.
    versions = bucket.version_counts()
    again = make_pod(window=WINDOW, name="after-finish")
    assert again.run("init-rclone").returncode == 0
    done = again.start("main", log=tmp_path / "c.log", **longer)
    assert done.wait(timeout=300) == 0, done.output()
    # What it uploads is its own run record only; every output of the window stays as it was.
    record = f"results/{villin_inputs.campaign.run_record('window', 1, WINDOW, again.pod_name)}"
    after = bucket.version_counts()
    assert record in after
    assert {key: n for key, n in after.items() if key != record} == \
        {key: n for key, n in versions.items() if key != record}
