"""The pod's upload (copy-out.sh): only its own changed outputs, serialized, failures reported."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.pod.harness import POD_SCRIPTS, REMOTE, seed_inputs

OUT = "villin-amber14-vacuum-production.out"
CHK = "villin-amber14-vacuum-production.chk"
XML = "villin-amber14-vacuum-production-checkpoint.xml"


def segment(k: int) -> str:
    return f"villin-amber14-vacuum-production-segment-{k:04d}.dcd"


@pytest.fixture
def earlier_window(bucket, villin_inputs, tmp_path):
    """The bucket after an earlier pod of window 3 (and one of window 4) uploaded some outputs."""
    seed_inputs(bucket, villin_inputs)
    earlier = tmp_path / "earlier"
    campaign = villin_inputs.campaign
    for window in (3, 4):
        directory = earlier / campaign.window_dir(1, window)
        directory.mkdir(parents=True)
        (directory / OUT).write_text("#step\n" + "".join(f"{i}\n" for i in range(10)))
        (directory / CHK).write_bytes(b"checkpoint-1" * 200)
        (directory / XML).write_text("<State stepCount='10'/>\n" * 50)
        (directory / segment(0)).write_bytes(os.urandom(5000))
        bucket.put_tree(earlier, str(campaign.window_dir(1, window)))
    return campaign.window_dir(1, 3)


def _simulate_more_frames(directory: Path) -> None:
    """What the window script does between two uploads, at file level."""
    time.sleep(0.01)  # a modification time visibly later than the download's
    with open(directory / OUT, "a") as handle:
        handle.write("".join(f"{i}\n" for i in range(10, 20)))
    (directory / segment(1)).write_bytes(os.urandom(5000))
    (directory / CHK).write_bytes(b"checkpoint-2" * 200)
    (directory / XML).write_text("<State stepCount='20'/>\n" * 50)


def test_upload_sends_only_the_windows_changed_outputs(make_pod, bucket, earlier_window):
    pod = make_pod(window=3)
    assert pod.run("init-rclone").returncode == 0
    before = bucket.version_counts()
    directory = pod.results / earlier_window
    _simulate_more_frames(directory)

    result = pod.copy_out("final")

    assert result.returncode == 0, result.stderr
    after = bucket.version_counts()
    new = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    prefix = f"results/{earlier_window}/"
    assert new == {prefix + OUT: 1, prefix + segment(1): 1, prefix + CHK: 1, prefix + XML: 1}
    latest = bucket.latest()
    for name in (OUT, segment(1), CHK, XML):
        local = directory / name
        assert latest[prefix + name] == local.stat().st_size
        assert bucket.read(prefix + name) == local.read_bytes()
        # rclone stores the file's modification time with the object; the next comparison uses it
        assert bucket.rclone_mtime(prefix + name) == pytest.approx(local.stat().st_mtime, abs=1e-6)
    assert bucket.read(prefix + segment(0)) == (directory / segment(0)).read_bytes()
    assert "uploaded 2 reporters file(s)" in result.stdout
    assert "uploaded 2 states file(s)" in result.stdout
    # reporters went up before the states that claim their frames
    assert result.stdout.index("reporters file(s)") < result.stdout.index("states file(s)")

    again = pod.copy_out("final")

    assert again.returncode == 0, again.stderr
    assert bucket.version_counts() == after
    assert "nothing changed since the last upload" in again.stdout


def test_without_a_record_unchanged_files_are_still_not_sent(make_pod, bucket, earlier_window):
    # e.g. the record of what was downloaded was lost: rclone's own comparison with the bucket decides
    pod = make_pod(window=3)
    assert pod.run("init-rclone").returncode == 0
    (pod.results / ".protbench-pod" / "uploaded.tsv").unlink()
    before = bucket.version_counts()
    (pod.results / earlier_window / segment(1)).write_bytes(os.urandom(3000))

    result = pod.copy_out("sync")

    assert result.returncode == 0, result.stderr
    after = bucket.version_counts()
    assert {k for k in after if after[k] != before.get(k, 0)} == {f"results/{earlier_window}/{segment(1)}"}
    # the log counts what really went up, not what was compared
    assert "uploaded 1 reporters file(s), 3000 bytes" in result.stdout
    assert "uploaded 0 states file(s), 0 bytes" in result.stdout


def test_temporaries_and_other_paths_are_never_uploaded(make_pod, bucket, earlier_window):
    pod = make_pod(window=3)
    assert pod.run("init-rclone").returncode == 0
    directory = pod.results / earlier_window
    (directory / f".{CHK}.abc123.tmp").write_bytes(b"half a checkpoint")
    (directory / "notes.tmp").write_text("scratch")
    # a shared input changed in the pod, and a file outside the Job's outputs
    (pod.results / "villin-amber14-vacuum" / "setup" / "villin-amber14-vacuum-minimized.pdb").write_text("x")
    (pod.results / "villin-amber14-vacuum" / "replica-1" / "stray.txt").write_text("x")
    before = bucket.version_counts()

    result = pod.copy_out("final")

    assert result.returncode == 0, result.stderr
    assert bucket.version_counts() == before


def test_a_sync_skips_while_another_upload_runs_and_the_final_one_waits(make_pod, bucket, earlier_window):
    pod = make_pod(window=3)
    assert pod.run("init-rclone").returncode == 0
    _simulate_more_frames(pod.results / earlier_window)
    before = bucket.version_counts()
    lock_path = pod.results / ".protbench-pod" / "upload.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # an upload in progress
        skipped = pod.copy_out("sync")
        assert skipped.returncode == 0
        assert "another upload is running; skipping this one" in skipped.stdout
        assert bucket.version_counts() == before
        script = pod.repo / POD_SCRIPTS / "copy-out.sh"
        log = pod.home / "final.log"
        with open(log, "w") as handle:
            final = subprocess.Popen(["bash", str(script), "final"], env=pod.env("main"), stdout=handle,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120  # a ceiling for a loaded machine; the wait ends at the line
        while "another upload is running; waiting for it to finish" not in log.read_text():
            assert final.poll() is None, f"the final upload did not wait for the lock:\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert final.poll() is None and bucket.version_counts() == before  # waiting, nothing sent
    assert final.wait(timeout=120) == 0, log.read_text()
    assert "uploaded 2 states file(s)" in log.read_text()
    assert bucket.version_counts() != before


#: rclone's own retries, cut short so that a dead endpoint fails in a second.
FEW_RCLONE_RETRIES = dict(RCLONE_RETRIES="1", RCLONE_LOW_LEVEL_RETRIES="1", RCLONE_CONTIMEOUT="2s")


def test_failed_upload_is_reported_and_retried_by_the_next(make_pod, bucket, earlier_window, s3, closed_port):
    pod = make_pod(window=3)
    assert pod.run("init-rclone").returncode == 0
    _simulate_more_frames(pod.results / earlier_window)
    good = pod.rclone_config.read_text()
    s3.rclone_config(pod.rclone_config, REMOTE, endpoint=f"http://127.0.0.1:{closed_port}")
    before = bucket.version_counts()

    failed = pod.copy_out("sync", **FEW_RCLONE_RETRIES)

    assert failed.returncode == 75
    assert "uploading to 'podtest:" in failed.stderr and "the next upload retries" in failed.stderr
    assert "retrying" not in failed.stdout  # a sync tries once: the next sync follows
    assert bucket.version_counts() == before

    pod.rclone_config.write_text(good)
    retried = pod.copy_out("sync")

    assert retried.returncode == 0, retried.stderr
    after = bucket.version_counts()
    assert sum(after.values()) - sum(before.values()) == 4


@pytest.mark.parametrize("change, expected", [
    (dict(PROTBENCH_OUTPUT_FILES=""), "PROTBENCH_OUTPUT_FILES is empty"),
    (dict(PROTBENCH_OUTPUT_FILES="../elsewhere/"), "entry '../elsewhere/' is not a relative path"),
    (dict(PROTBENCH_OUTPUT_FILES="/etc/"), "entry '/etc/' is not a relative path"),
    (dict(PROTBENCH_RCLONE_REMOTE=""), "PROTBENCH_RCLONE_REMOTE is empty"),
    (dict(RCLONE_CONFIG="/nonexistent/rclone.conf"), "rclone config /nonexistent/rclone.conf is missing"),
])
def test_bad_environment_fails_the_upload_naming_the_fix(make_pod, bucket, change, expected):
    pod = make_pod(window=3)
    pod.results.mkdir(parents=True)

    result = pod.copy_out("final", **change)

    assert result.returncode == 2
    assert expected in result.stderr


def test_unknown_mode_is_refused(make_pod, bucket):
    pod = make_pod(window=3)
    pod.results.mkdir(parents=True)
    result = pod.copy_out("everything")
    assert result.returncode == 2
    assert "usage: copy-out.sh sync|final|prestop" in result.stderr


def test_uploads_during_writes_never_leave_a_checkpoint_ahead_of_its_reporter(make_pod, bucket, villin_inputs):
    # A writer much faster than the engine, in its order: frames reach the reporter, and every
    # 20 frames a checkpoint claiming them replaces the old one atomically. Uploads run meanwhile.
    seed_inputs(bucket, villin_inputs)
    pod = make_pod(window=6)
    assert pod.run("init-rclone").returncode == 0
    directory = pod.results / pod.output_files[0]
    directory.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def write_frames():
        frame = 0
        with open(directory / OUT, "a") as reporter:
            while not stop.is_set():
                frame += 1
                reporter.write(f"{frame}\n")
                reporter.flush()
                if frame % 20 == 0:
                    (directory / ".chk.tmp").write_text(str(frame))
                    os.replace(directory / ".chk.tmp", directory / CHK)
                time.sleep(0.0005)

    writer = threading.Thread(target=write_frames)
    writer.start()
    try:
        for _ in range(3):
            result = pod.copy_out("sync")
            assert result.returncode == 0, result.stderr
            prefix = f"results/{pod.output_files[0]}"
            claimed = int(bucket.read(prefix + CHK))
            held = len(bucket.read(prefix + OUT).decode().splitlines())
            assert claimed <= held, f"the bucket's checkpoint claims frame {claimed}, its reporter holds {held}"
    finally:
        stop.set()
        writer.join()


def test_rejected_credentials_fail_the_upload_with_67_without_retrying(make_pod, bucket, earlier_window, s3):
    pod = make_pod(window=3)
    assert pod.run("init-rclone").returncode == 0
    _simulate_more_frames(pod.results / earlier_window)
    pod.rclone_config.write_text(pod.rclone_config.read_text().replace(s3.secret_access_key, "not-the-secret-key"))
    before = bucket.version_counts()

    failed = pod.copy_out("final", PROTBENCH_TRANSFER_RETRY_SECONDS="60", **FEW_RCLONE_RETRIES)

    assert failed.returncode == 67, failed.stdout + failed.stderr
    assert "rejected the bucket or the credentials; fix BUCKET or the rclone secret, then --relaunch" in failed.stderr
    assert "retrying" not in failed.stdout
    assert bucket.version_counts() == before
    assert "not-the-secret-key" not in failed.stdout + failed.stderr


def test_final_upload_retries_in_place_and_gives_up_with_75(make_pod, bucket, earlier_window, s3, closed_port):
    pod = make_pod(window=3)
    assert pod.run("init-rclone").returncode == 0
    _simulate_more_frames(pod.results / earlier_window)
    s3.rclone_config(pod.rclone_config, REMOTE, endpoint=f"http://127.0.0.1:{closed_port}")
    before = bucket.version_counts()

    failed = pod.copy_out("final", PROTBENCH_TRANSFER_TRIES="3", PROTBENCH_TRANSFER_RETRY_SECONDS="0.1",
                          **FEW_RCLONE_RETRIES)

    assert failed.returncode == 75, failed.stdout + failed.stderr
    assert [line.split(";")[-1] for line in failed.stdout.splitlines() if "retrying in" in line] == [
        " retrying in 0.1 s", " retrying in 0.2 s"]
    assert "3 times; what did not arrive stays on this pod's volume, and a new pod resumes from the bucket" \
        in failed.stderr
    assert bucket.version_counts() == before


def test_final_upload_succeeds_when_the_bucket_comes_back_during_its_retries(make_pod, bucket, earlier_window,
                                                                            s3, closed_port):
    pod = make_pod(window=3)
    assert pod.run("init-rclone").returncode == 0
    _simulate_more_frames(pod.results / earlier_window)
    s3.rclone_config(pod.rclone_config, REMOTE, endpoint=f"http://127.0.0.1:{closed_port}")
    log = pod.home / "final.log"
    script = pod.repo / POD_SCRIPTS / "copy-out.sh"
    with open(log, "w") as handle:
        upload = subprocess.Popen(["bash", str(script), "final"], stdout=handle, stderr=subprocess.STDOUT,
                                  env=pod.env("main", PROTBENCH_TRANSFER_TRIES="5",
                                              PROTBENCH_TRANSFER_RETRY_SECONDS="1", **FEW_RCLONE_RETRIES))
        deadline = time.monotonic() + 60
        while "retrying in" not in log.read_text():
            assert time.monotonic() < deadline and upload.poll() is None, log.read_text()
            time.sleep(0.05)
        s3.rclone_config(pod.rclone_config, REMOTE)  # the endpoint is back
        assert upload.wait(timeout=120) == 0, log.read_text()
    for name in (OUT, CHK, XML, segment(1)):
        assert bucket.read(f"results/{earlier_window}/{name}") == (pod.results / earlier_window / name).read_bytes()
