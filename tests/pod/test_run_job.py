"""The main container (run-job.sh as PID 1) and its preStop hook, around a stand-in script.

The stand-in (conftest.FAKE_SCRIPT) writes one line per "frame" and, on
SIGTERM, finishes its frame, writes a checkpoint and a marker and exits 143,
as the window script does; the real window script is exercised in
test_consistency.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.pod.harness import POD_SCRIPTS, make_fake_repo, seed_inputs

FAKE_OUT = "fake-production.out"
FAKE_CHK = "fake-production.chk"
FAKE_MARKER = "fake-term-received"


@pytest.fixture
def fake_pod(make_pod, bucket, villin_inputs, tmp_path):
    """A window pod whose checkout runs the stand-in script, its inputs in the bucket."""
    seed_inputs(bucket, villin_inputs)

    def build(window: int = 5, **kwargs):
        pod = make_pod(window=window, **kwargs)
        make_fake_repo(tmp_path / f"repo-{window}", pod.job.script_path)
        pod.repo = tmp_path / f"repo-{window}"
        assert pod.run("init-rclone").returncode == 0
        return pod

    return build


def _fake_env(pod, **extra):
    output_dir = pod.output_files[0].rstrip("/")
    return {"FAKE_OUTPUT_DIR": output_dir, "PROTBENCH_SYNC_MINUTES": "0", **extra}


def _wait_for(predicate, timeout: float = 120, what: str = "condition"):  # a ceiling for loaded CI machines
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _key(pod, name: str) -> str:
    return f"results/{pod.output_files[0]}{name}"


def _window_file(pod, name: str):
    return pod.results / pod.output_files[0] / name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_forwarded_then_the_checkpoint_is_uploaded(fake_pod, bucket, signum, terminal_sigint):
    pod = fake_pod()
    main = pod.start("main", **_fake_env(pod, FAKE_FRAMES="100000"))
    _wait_for(lambda: _window_file(pod, FAKE_OUT).exists(), what="the script to start")

    main.signal(signum)
    status = main.wait(timeout=120)  # a ceiling: it takes seconds, more on a loaded machine

    assert status == 143  # the script's own status: the Job restarts the pod
    frames = _window_file(pod, FAKE_MARKER).read_text().strip()
    assert bucket.read(_key(pod, FAKE_MARKER)).decode().strip() == frames
    assert bucket.read(_key(pod, FAKE_CHK)).decode() == f"checkpoint at frame {frames}\n"
    assert bucket.read(_key(pod, FAKE_OUT)) == _window_file(pod, FAKE_OUT).read_bytes()
    log = main.output()
    assert log.index(f"SIG{signal.Signals(signum).name[3:]} received") < log.index("script exited with status 143")
    assert log.index("script exited with status 143") < log.index("copy-out(final): uploaded")


@pytest.mark.parametrize("script_status", [0, 3])
def test_exit_status_is_the_scripts_and_outputs_are_uploaded(fake_pod, bucket, script_status):
    pod = fake_pod()
    main = pod.start("main", **_fake_env(pod, FAKE_FRAMES="5", FAKE_FRAME_SECONDS="0.01",
                                          FAKE_EXIT=str(script_status)))

    assert main.wait(timeout=60) == script_status
    assert bucket.read(_key(pod, FAKE_CHK)).decode() == "checkpoint at frame 5\n"
    assert bucket.read(_key(pod, FAKE_OUT)).decode().count("frame") == 5
    assert f"exiting with the script's status {script_status}" in main.output()


def test_periodic_sync_uploads_while_the_script_runs(fake_pod, bucket):
    pod = fake_pod()
    main = pod.start("main", **_fake_env(pod, FAKE_FRAMES="100000", PROTBENCH_SYNC_MINUTES="0.005"))

    # three uploads of the growing reporter while the script is still running
    _wait_for(lambda: bucket.version_counts().get(_key(pod, FAKE_OUT), 0) >= 3, timeout=60,
              what="three periodic uploads")
    assert main.process.poll() is None
    assert _key(pod, FAKE_CHK) not in bucket.latest()  # no checkpoint yet: none claimed

    main.signal(signal.SIGTERM)
    assert main.wait(timeout=60) == 143
    assert "uploading changes every 0.005 min" in main.output()
    assert bucket.read(_key(pod, FAKE_OUT)) == _window_file(pod, FAKE_OUT).read_bytes()


def test_prestop_waits_for_the_one_final_upload(fake_pod, bucket):
    pod = fake_pod()
    main = pod.start("main", **_fake_env(pod, FAKE_FRAMES="100000"))
    _wait_for(lambda: _window_file(pod, FAKE_OUT).exists(), what="the script to start")

    hook = pod.run_prestop(**_fake_env(pod))

    # When the hook returns, the script has checkpointed and its final state is in the bucket.
    assert hook.returncode == 0, hook.stderr
    assert "final upload finished" in hook.stdout
    assert "copy-out" not in hook.stdout + hook.stderr  # the hook itself uploaded nothing
    frames = _window_file(pod, FAKE_MARKER).read_text().strip()
    assert bucket.read(_key(pod, FAKE_CHK)).decode() == f"checkpoint at frame {frames}\n"
    # one upload only (no periodic sync here): every object has exactly one version
    counts = bucket.version_counts(f"results/{pod.output_files[0]}")
    assert set(counts.values()) == {1}
    # Kubernetes sends SIGTERM after the hook returns; PID 1 is already stopping
    main.signal(signal.SIGTERM)
    assert main.wait(timeout=60) == 143
    assert main.output().count("copy-out(final): uploaded 2 reporters file(s)") == 1


def test_prestop_uploads_by_itself_when_run_job_is_gone(fake_pod, bucket):
    pod = fake_pod()
    window_dir = pod.results / pod.output_files[0]
    window_dir.mkdir(parents=True, exist_ok=True)
    (window_dir / FAKE_CHK).write_text("left by a script that ran\n")

    hook = pod.run_prestop()

    assert hook.returncode == 0, hook.stderr
    assert "run-job.sh is not running; uploading directly" in hook.stdout
    assert bucket.read(_key(pod, FAKE_CHK)) == b"left by a script that ran\n"


def test_final_upload_of_a_finished_script_refused_by_the_bucket_exits_67(fake_pod, bucket, s3):
    pod = fake_pod()
    config = pod.rclone_config.read_text()
    pod.rclone_config.write_text(config.replace(s3.secret_access_key, "revoked-secret"))

    main = pod.start("main", **_fake_env(pod, FAKE_FRAMES="2", FAKE_FRAME_SECONDS="0.01",
                                          PROTBENCH_TRANSFER_RETRY_SECONDS="60"))

    assert main.wait(timeout=60) == 67
    log = main.output()
    assert "final upload failed (copy-out status 67)" in log
    assert "exiting 67: fix the bucket or the rclone secret, then --relaunch" in log
    assert "revoked-secret" not in log


def test_failed_final_upload_of_a_finished_script_is_retried_in_place_then_exits_75(fake_pod, bucket, s3,
                                                                                    closed_port):
    pod = fake_pod()
    s3.rclone_config(pod.rclone_config, "podtest", endpoint=f"http://127.0.0.1:{closed_port}")

    main = pod.start("main", **_fake_env(pod, FAKE_FRAMES="2", FAKE_FRAME_SECONDS="0.01",
                                          PROTBENCH_TRANSFER_TRIES="2", PROTBENCH_TRANSFER_RETRY_SECONDS="0.1",
                                          RCLONE_RETRIES="1", RCLONE_LOW_LEVEL_RETRIES="1"))

    assert main.wait(timeout=60) == 75
    log = main.output()
    assert "(try 1 of 2); retrying in 0.1 s" in log
    assert "final upload failed (copy-out status 75)" in log
    assert "exiting 75 so the Job starts a new pod, which resumes from the bucket" in log


@pytest.mark.parametrize("change, status, expected", [
    (dict(PROTBENCH_SYNC_MINUTES="half an hour"), 2, "PROTBENCH_SYNC_MINUTES 'half an hour' is not a number"),
    (dict(PROTBENCH_SCRIPT_PATH="umbrella-scripts/missing.py"), 2, "umbrella-scripts/missing.py does not exist"),
    (dict(PROTBENCH_SCRIPT_PATH=""), 2, "PROTBENCH_SCRIPT_PATH is empty"),
    (dict(PROTBENCH_PROTEINBENCHMARK_REF="./no-such-checkout"), 1,
     "pip could not install proteinbenchmark at './no-such-checkout'"),
])
def test_bad_setup_stops_the_main_container_naming_the_fix(fake_pod, bucket, change, status, expected):
    pod = fake_pod()

    main = pod.start("main", **_fake_env(pod, FAKE_FRAMES="2", **change))

    assert main.wait(timeout=120) == status
    assert expected in main.output()
    assert not _window_file(pod, FAKE_OUT).exists()  # the script never ran


def test_script_without_executable_bit_is_refused(fake_pod, bucket):
    pod = fake_pod()
    (pod.repo / pod.job.script_path).chmod(0o644)  # as a commit without the +x bit checks it out

    main = pod.start("main", **_fake_env(pod))

    assert main.wait(timeout=60) == 2
    assert "git update-index --chmod=+x" in main.output()


ACTIVATION_PROBE = """#!/usr/bin/env bash
echo "environment=${FAKE_ACTIVATED_ENV:-none}" >"$2/activation.txt"
"""

FAKE_MICROMAMBA = """#!/bin/sh
# Prints a hook defining a micromamba function, as the real one does.
if [ "$1 $2" = "shell hook" ]; then
    echo 'micromamba() { [ "$1" = activate ] && export FAKE_ACTIVATED_ENV="$2"; }'
fi
"""


@pytest.mark.parametrize("in_image,expected", [(True, "base"), (False, "none")])
def test_the_image_environment_is_activated_before_the_script(make_pod, bucket, villin_inputs,
                                                              tmp_path, in_image, expected):
    # The template's command replaces the micromamba image's entrypoint, so
    # run-job.sh activates the environment itself when it runs in the image.
    seed_inputs(bucket, villin_inputs)
    pod = make_pod(window=7)
    pod.repo = make_fake_repo(tmp_path / "repo", pod.job.script_path, body=ACTIVATION_PROBE)
    assert pod.run("init-rclone").returncode == 0
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "micromamba").write_text(FAKE_MICROMAMBA)
    (fake_bin / "micromamba").chmod(0o755)
    extra = {"PATH": f"{fake_bin}:{pod.env()['PATH']}", "PROTBENCH_SYNC_MINUTES": "0"}
    if in_image:
        extra["MAMBA_ROOT_PREFIX"] = "/opt/conda"

    result = pod.run("main", **extra)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (pod.results / "activation.txt").read_text() == f"environment={expected}\n"


# -- stops during start-up, and the signal races of run-job.sh ---------------

SLOW_MICROMAMBA = """#!/bin/sh
# The shell hook takes a while, as activation does in a large environment.
if [ "$1 $2" = "shell hook" ]; then
    : >"$FAKE_STARTED"
    sleep 3
    echo 'micromamba() { :; }'
fi
"""

#: `python -m pip install` records its arguments (and sleeps FAKE_PIP_SECONDS);
#: `python -m pip freeze` lists proteinbenchmark as pip lists a git install.
FAKE_PYTHON = """#!/bin/sh
case "$1 $2 $3" in
    "-m pip install")
        echo "$*" >"$FAKE_STARTED"
        exec sleep "${FAKE_PIP_SECONDS:-0}" ;;
    "-m pip freeze")
        echo "numpy==2.0.0"
        echo "proteinbenchmark @ git+https://github.com/openforcefield/proteinbenchmark.git@0123456789abcdef" ;;
    *) echo "fake python: unexpected $*" >&2; exit 9 ;;
esac
"""


def _fake_bin(pod, tmp_path, **programs: str) -> dict[str, str]:
    """Environment putting stand-ins for ``programs`` first on PATH."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir(exist_ok=True)
    for name, body in programs.items():
        (fake_bin / name).write_text(body)
        (fake_bin / name).chmod(0o755)
    return {"PATH": f"{fake_bin}:{pod.env()['PATH']}", "FAKE_STARTED": str(tmp_path / "fake-started")}


def _leftover_output(pod) -> str:
    """An output of an earlier container on the volume, not yet in the bucket: the final upload sends it."""
    window_dir = pod.results / pod.output_files[0]
    window_dir.mkdir(parents=True, exist_ok=True)
    (window_dir / FAKE_CHK).write_text("written by the container before\n")
    return _key(pod, FAKE_CHK)


@pytest.mark.parametrize("stop", ["sigterm", "prestop"])
def test_a_stop_during_start_up_ends_in_the_upload(fake_pod, bucket, tmp_path, stop):
    # PID 1 ignores signals it has no trap for: the traps must come before the slow start-up.
    pod = fake_pod()
    key = _leftover_output(pod)
    extra = {**_fake_env(pod), **_fake_bin(pod, tmp_path, micromamba=SLOW_MICROMAMBA),
             "MAMBA_ROOT_PREFIX": "/opt/conda"}
    main = pod.start("main", **extra)
    _wait_for(lambda: (tmp_path / "fake-started").exists(), what="the environment's activation")

    if stop == "sigterm":
        main.signal(signal.SIGTERM)
    else:
        started = time.monotonic()
        hook = pod.run_prestop(timeout=60, **extra)
        assert hook.returncode == 0, hook.stdout + hook.stderr
        assert "final upload finished (script status 143, upload status 0)" in hook.stdout
        assert time.monotonic() - started < 30
        assert bucket.read(key) == b"written by the container before\n"  # uploaded before the hook returned

    assert main.wait(timeout=60) == 143
    log = main.output()
    assert "SIGTERM received" in log and "stopped before the script started" in log
    assert "copy-out(final): uploaded" in log
    assert bucket.read(key) == b"written by the container before\n"
    assert not _window_file(pod, FAKE_OUT).exists()  # the script never ran


def test_a_stop_during_the_proteinbenchmark_install_ends_in_the_upload(fake_pod, bucket, tmp_path):
    pod = fake_pod()
    key = _leftover_output(pod)
    extra = {**_fake_env(pod), **_fake_bin(pod, tmp_path, python=FAKE_PYTHON),
             "PROTBENCH_PROTEINBENCHMARK_REF": "main", "FAKE_PIP_SECONDS": "3600"}
    main = pod.start("main", **extra)
    _wait_for(lambda: (tmp_path / "fake-started").exists(), what="pip")

    main.signal(signal.SIGTERM)

    # pip was stopped, not waited for: the hour it takes is far beyond this ceiling for a loaded machine
    assert main.wait(timeout=300) == 143
    log = main.output()
    assert "stopped before the script started" in log
    assert "pip could not install" not in log
    assert bucket.read(key) == b"written by the container before\n"
    assert not _window_file(pod, FAKE_OUT).exists()


def test_the_installed_proteinbenchmark_is_logged(fake_pod, bucket, tmp_path):
    # A moving ref like `main`: the log must say which commit it was.
    pod = fake_pod()
    extra = {**_fake_env(pod, FAKE_FRAMES="1"), **_fake_bin(pod, tmp_path, python=FAKE_PYTHON),
             "PROTBENCH_PROTEINBENCHMARK_REF": "main"}

    main = pod.start("main", **extra)

    assert main.wait(timeout=60) == 0
    assert "git+https://github.com/openforcefield/proteinbenchmark.git@main" in \
        (tmp_path / "fake-started").read_text()
    assert ("run-job: proteinbenchmark installed: proteinbenchmark @ "
            "git+https://github.com/openforcefield/proteinbenchmark.git@0123456789abcdef") in main.output()


def _process_start(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(") ", 1)[1].split()[19])


def test_prestop_is_not_fooled_by_the_previous_containers_files(fake_pod, bucket):
    # The volume keeps the pid file and done marker of the container before;
    # its PID 1 had the pid a live process has now (the next PID 1).
    pod = fake_pod()
    key = _leftover_output(pod)
    state = pod.results / ".protbench-pod"
    other = subprocess.Popen(["sleep", "60"])
    try:
        old_run = f"{other.pid}:{_process_start(other.pid) + 1}"
        (state / "run-job.pid").write_text(old_run + "\n")
        (state / "final-upload.done").write_text(f"{old_run} 143 0\n")

        hook = pod.run_prestop()
    finally:
        other.kill()
        other.wait()

    assert hook.returncode == 0, hook.stdout + hook.stderr
    assert "already done" not in hook.stdout
    assert "run-job.sh is not running" in hook.stdout
    assert bucket.read(key) == b"written by the container before\n"


RUN_CHILD = """
source "$RUN_JOB"
trap 'on_signal TERM' TERM
{body}
"""


def _run_child_shell(body: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """bash with run-job.sh's functions (sourced: main does not run), running ``body``."""
    script = REPO_ROOT / POD_SCRIPTS / "run-job.sh"
    return subprocess.run(["bash", "-c", RUN_CHILD.format(body=body)], env={**os.environ, "RUN_JOB": str(script)},
                          capture_output=True, text=True, timeout=timeout)


def test_a_signal_before_the_child_pid_is_known_is_passed_on():
    # on_signal ran while $! was not yet known: run_child must pass it on itself.
    started = time.monotonic()
    result = _run_child_shell('stopping=TERM; run_child sleep 30; echo "status=$?"')

    assert "status=143" in result.stdout, result.stdout + result.stderr
    assert "passing the earlier SIGTERM on to pid" in result.stdout
    assert time.monotonic() - started < 15


def test_the_exit_status_is_the_childs_when_a_signal_comes_as_it_exits():
    # The child signals run-job.sh and exits at once: the trap interrupts the
    # wait while the child exits, which must not turn its status 7 into 143.
    body = """
    for i in $(seq 20); do
        stopping=""
        run_child sh -c 'trap "" TERM; kill -TERM "$PPID"; exit 7'
        echo "status=$?"
    done
    """
    result = _run_child_shell(body)

    statuses = [line for line in result.stdout.splitlines() if line.startswith("status=")]
    assert statuses == ["status=7"] * 20, result.stdout + result.stderr
