"""Each pod leaves a run record in its own output directory in the bucket (real rclone, moto S3).

The main container runs run-job.sh as in the pod; the simulation is a
stand-in that writes a progress record per "frame" and resumes from its
checkpoint as the window script does, so a stop and a second pod show work
done again. ``nvidia-smi`` is absent here (the record says null) unless a
test puts a stand-in of its CSV interface on PATH.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import openmm
import pytest

from protbench_nrp import status, usage
from protbench_nrp.layout import Campaign
from protbench_nrp.store import BucketStore

from tests.conftest import REPO_ROOT, VILLIN_FF
from tests.pod.harness import NODE_NAME, make_fake_repo, seed_inputs

#: Writes the progress record every "frame" of 100 steps, a checkpoint every 5 frames;
#: resumes from the checkpoint; on SIGTERM writes a checkpoint and exits 143. With
#: FAKE_PAUSE_AT_STEP it holds at that step until stopped, so a test stops it there.
PROGRESS_SCRIPT = """#!/usr/bin/env bash
set -u
dir="$2/$FAKE_OUTPUT_DIR"
mkdir -p "$dir"
progress="$dir/$FAKE_PROGRESS_NAME"
step=$(cat "$dir/fake.chk" 2>/dev/null || echo 0)
total=${FAKE_TOTAL_STEPS:-2000}
stop=""
trap 'stop=1' TERM
write_progress() {
    printf '{"kind": "progress", "phase": "%s", "step": %d, "total_steps": %d, ' "$1" "$step" "$total" \\
        >"$progress.tmp"
    printf '"ns_per_day": 100.0, "updated_unix": %s}\\n' "$(date +%s.%N)" >>"$progress.tmp" \\
        && mv "$progress.tmp" "$progress"
}
frame=0
sleep "${FAKE_STARTUP_SECONDS:-1.5}"  # as OpenMM builds its context
while [ "$step" -lt "$total" ] && [ -z "$stop" ]; do
    sleep "${FAKE_FRAME_SECONDS:-0.05}"
    step=$((step + 100)); frame=$((frame + 1))
    write_progress production
    if [ $((frame % 5)) -eq 0 ]; then echo "$step" >"$dir/fake.chk"; fi
    if [ "$step" -eq "${FAKE_PAUSE_AT_STEP:--1}" ]; then
        while [ -z "$stop" ]; do sleep 0.05; done
    fi
done
if [ -n "$stop" ]; then echo "$step" >"$dir/fake.chk"; exit 143; fi
write_progress finished
exit "${FAKE_EXIT:-0}"
"""

#: nvidia-smi's CSV interface as the queries of runrecord.py use it, for one H100.
FAKE_NVIDIA_SMI = """#!/bin/sh
case "$*" in
    *name,driver_version,uuid*) echo "NVIDIA H100 80GB HBM3, 550.54.15, GPU-1234" ;;
    *utilization.gpu*) n=$(cat "$FAKE_SMI_COUNT" 2>/dev/null || echo 0); echo $((n + 1)) >"$FAKE_SMI_COUNT"
        if [ $((n % 2)) -eq 0 ]; then echo 90; else echo 70; fi ;;
    *) exit 6 ;;
esac
"""


@pytest.fixture
def record_pod(make_pod, bucket, villin_inputs, tmp_path):
    """A window pod whose checkout has the real pod scripts and library and the stand-in script."""
    seed_inputs(bucket, villin_inputs)

    def build(suffix: str = "aaaaa", repo_name: str = "repo"):
        pod = make_pod(window=3, name=f"pod-{suffix}")
        repo = tmp_path / repo_name
        if not repo.exists():
            make_fake_repo(repo, pod.job.script_path, PROGRESS_SCRIPT)
            library = REPO_ROOT / "umbrella-scripts" / "protbench_nrp"
            shutil.copytree(library, repo / "umbrella-scripts" / "protbench_nrp",
                            ignore=shutil.ignore_patterns("__pycache__"))
        pod.repo = repo
        pod.pod_suffix = suffix
        assert pod.run("init-rclone").returncode == 0
        return pod

    return build


def _env(pod, **extra):
    campaign = Campaign("villin", VILLIN_FF)
    return {"FAKE_OUTPUT_DIR": pod.output_files[0].rstrip("/"),
            "FAKE_PROGRESS_NAME": campaign.window_files(1, 3).progress.name,
            "PROTBENCH_SYNC_MINUTES": "0", "PROTBENCH_MONITOR_POLL_SECONDS": "0.02",
            "FAKE_FRAME_SECONDS": "0.2", **extra}


#: For tests that check what a pod says and how it exits, not what its monitor saw on the way.
QUICK = {"FAKE_STARTUP_SECONDS": "0", "FAKE_FRAME_SECONDS": "0.01"}


def _record(bucket, pod) -> dict:
    key = f"results/{Campaign('villin', VILLIN_FF).run_record('window', 1, 3, pod.pod_name)}"
    return json.loads(bucket.read(key))


def test_a_finished_pod_leaves_a_complete_run_record_in_the_bucket(record_pod, bucket):
    pod = record_pod()
    started = time.time()

    main = pod.start("main", **_env(pod))

    assert main.wait(timeout=120) == 0, main.output()
    record = _record(bucket, pod)
    assert record["pod"] == pod.pod_name and pod.pod_name.startswith("pb-pt-villin-")
    assert record["node"] == NODE_NAME
    assert (record["stage"], record["replica"], record["window"]) == ("window", 1, 3)
    assert started <= record["started_unix"] <= record["finished_unix"] <= time.time()
    assert record["exit_status"] == 0 and record["exit_meaning"] == "done"
    assert record["openmm"] == {"version": openmm.__version__, "platform": "CUDA", "precision": "mixed"}
    assert record["image"] == "registry.invalid/protbench:test"
    assert record["image_digest"] is None  # the harness renders an unpinned tag
    assert record["first_step"] == {"phase": "production", "step": 100}
    assert record["last_step"] == {"phase": "finished", "step": 2000}
    # no nvidia-smi here: null, never invented
    assert record["gpu"] is None
    assert record["gpu_utilization_mean_percent"] is None and record["gpu_utilization_samples"] == 0
    assert record["memory_request_bytes"] == 8 * 2**30  # the template's requests.memory, by the downward API
    cgroup = [Path("/sys/fs/cgroup/memory.peak"), Path("/sys/fs/cgroup/memory/memory.max_usage_in_bytes")]
    if any(path.exists() for path in cgroup):
        assert isinstance(record["peak_memory_bytes"], int) and record["peak_memory_bytes"] > 0
    else:
        assert record["peak_memory_bytes"] is None


def test_a_stopped_pod_and_its_replacement_leave_two_records_showing_the_work_done_again(record_pod, bucket, s3):
    first = record_pod("first")
    # Stopped past the first checkpoint (frame 5), before the second: held at step 700 until the
    # test, seeing that step written, stops it; no race with the frames on a loaded machine.
    main = first.start("main", **_env(first, FAKE_FRAME_SECONDS="0.1", FAKE_TOTAL_STEPS="100000",
                                      FAKE_PAUSE_AT_STEP="700"))
    progress = first.results / first.output_files[0] / Campaign("villin", VILLIN_FF).window_files(1, 3).progress.name
    deadline = time.monotonic() + 120  # a ceiling for a loaded machine; the wait ends at step 700
    while not (progress.exists() and json.loads(progress.read_text())["step"] == 700):
        assert main.process.poll() is None and time.monotonic() < deadline, main.output()
        time.sleep(0.02)
    main.signal(signal.SIGTERM)
    assert main.wait(timeout=60) == 143

    stopped = _record(bucket, first)
    assert stopped["last_step"] == {"phase": "production", "step": 700}
    assert stopped["exit_status"] == 143
    assert stopped["exit_meaning"].startswith("stopped by SIGTERM with a checkpoint written")
    # The stand-in checkpoints on SIGTERM; its replacement starts where the bucket's checkpoint is.
    second = record_pod("second")
    (second.results / second.output_files[0] / "fake.chk").write_text("500\n")  # an older checkpoint
    again = second.start("main", **_env(second, FAKE_TOTAL_STEPS="1000"))
    assert again.wait(timeout=120) == 0

    resumed = _record(bucket, second)
    assert resumed["first_step"] == {"phase": "production", "step": 600}
    assert stopped["last_step"]["step"] > resumed["first_step"]["step"]  # done again by the second pod

    # --status reads both from the bucket: two pods, and GPU-hours lost to the steps done again
    reader = BucketStore(s3.client(), bucket.name)
    records, errors = status.read_run_records(reader, Campaign("villin", VILLIN_FF).run_records_dir("window", 1, 3))
    assert errors == []
    summed = usage.window_usage(records)
    assert summed.pods == 2
    assert [pod.pod for pod in summed.per_pod] == [first.pod_name, second.pod_name]
    assert 0 < summed.lost_gpu_hours < summed.per_pod[1].gpu_hours
    assert summed.gpu_hours == pytest.approx(sum(pod.gpu_hours for pod in summed.per_pod))


def test_gpu_model_driver_and_mean_utilisation_come_from_nvidia_smi(record_pod, bucket, tmp_path):
    pod = record_pod()
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (fake_bin / "nvidia-smi").chmod(0o755)
    extra = _env(pod, FAKE_FRAME_SECONDS="0.1", PROTBENCH_MONITOR_SECONDS="0.2",
                 PATH=f"{fake_bin}:{pod.env()['PATH']}", FAKE_SMI_COUNT=str(tmp_path / "smi-count"))

    main = pod.start("main", **extra)

    assert main.wait(timeout=120) == 0, main.output()
    record = _record(bucket, pod)
    assert record["gpu"] == {"model": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "count": 1,
                             "uuids": ["GPU-1234"]}
    samples = record["gpu_utilization_samples"]
    assert samples >= 2
    expected = sum(90 if i % 2 == 0 else 70 for i in range(samples)) / samples
    assert record["gpu_utilization_mean_percent"] == pytest.approx(expected, abs=0.01)


def test_a_pod_without_its_name_keeps_no_record_and_runs_on(record_pod, bucket):
    pod = record_pod()
    main = pod.start("main", **_env(pod, POD_NAME="", **QUICK))
    assert main.wait(timeout=120) == 0
    assert "POD_NAME is empty" in main.output()
    keys = [v.key for v in bucket.versions()]
    assert not any("/run-records/" in key for key in keys)


def test_a_checkout_without_the_helper_runs_without_a_record(make_pod, bucket, villin_inputs, tmp_path):
    seed_inputs(bucket, villin_inputs)
    pod = make_pod(window=3)
    pod.repo = make_fake_repo(tmp_path / "bare-repo", pod.job.script_path, PROGRESS_SCRIPT)
    assert pod.run("init-rclone").returncode == 0
    main = pod.start("main", **_env(pod, **QUICK))
    assert main.wait(timeout=120) == 0
    assert "no run record kept" in main.output()


def test_pinned_proteinbenchmark_is_installed_at_exactly_the_launch_commit(make_pod, bucket, villin_inputs,
                                                                          tmp_path):
    seed_inputs(bucket, villin_inputs)
    pod = make_pod(window=3)
    pod.repo = make_fake_repo(tmp_path / "repo", pod.job.script_path, PROGRESS_SCRIPT)
    assert pod.run("init-rclone").returncode == 0
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "python").write_text(
        '#!/bin/sh\ncase "$1 $2 $3" in\n  "-m pip install") echo "$*" >"$FAKE_STARTED" ;;\n  *) exit 0 ;;\nesac\n')
    (fake_bin / "python").chmod(0o755)
    commit = "0123456789abcdef0123456789abcdef01234567"
    extra = _env(pod, PATH=f"{fake_bin}:{pod.env()['PATH']}", FAKE_STARTED=str(tmp_path / "pip-args"),
                 PROTBENCH_PROTEINBENCHMARK_REF=commit,
                 PROTBENCH_PROTEINBENCHMARK_REPO="https://git.example.org/fork/proteinbenchmark.git", **QUICK)

    assert pod.start("main", **extra).wait(timeout=120) == 0
    assert (tmp_path / "pip-args").read_text().split()[-1] == \
        f"git+https://git.example.org/fork/proteinbenchmark.git@{commit}"
