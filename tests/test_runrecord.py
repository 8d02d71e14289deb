"""The pieces of a pod's run record that need no pod: meanings, steps, memory, the record's life."""

from __future__ import annotations

import json
import time

import pytest

from protbench_nrp import exits, runrecord
from protbench_nrp.records import Progress

from tests.conftest import VILLIN_FF


@pytest.mark.parametrize("status, meaning", [
    *((status.code, status.meaning) for status in exits.EXIT_STATUSES),
    (137, "killed by SIGKILL"), (42, "unknown exit status (not in the table)"), (None, None),
])
def test_every_exit_status_has_its_meaning(status, meaning):
    assert runrecord.exit_meaning(status) == meaning


def _context(tmp_path, **env):
    base = {"PROTBENCH_RESULTS_DIR": str(tmp_path / "results"), "PROTBENCH_STAGE": "window",
            "PROTBENCH_TARGET": "villin", "PROTBENCH_FF": VILLIN_FF, "PROTBENCH_REPLICA": "2",
            "PROTBENCH_WINDOW": "07", "POD_NAME": "pb-x-2-07-abcde", "POD_NODE_NAME": "node-9",
            "PROTBENCH_CGROUP_ROOT": str(tmp_path / "cgroup"), "PATH": ""}  # no nvidia-smi
    return runrecord.PodContext({**base, **env})


def test_the_record_lies_in_the_jobs_own_output_directory(tmp_path):
    context = _context(tmp_path)
    assert context.record_path == (tmp_path / "results" / f"villin-{VILLIN_FF}" / "replica-2" / "window-07"
                                   / "run-records" / "pb-x-2-07-abcde.json")


def test_a_progress_record_inherited_from_an_earlier_pod_is_not_this_pods_first_step(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    context = _context(tmp_path)
    # An earlier pod on a node whose clock ran an hour ahead left this in the bucket.
    Progress("production", 5000, 10000, 50.0, time.time() + 3600).write(context.progress_path)
    record = runrecord.start(context)
    assert record["inherited_progress_unix"] is not None
    assert runrecord.update(context)["first_step"] is None  # still only the inherited one
    Progress("production", 4000, 10000, 50.0, time.time()).write(context.progress_path)  # resumed earlier
    record = runrecord.update(context, 143, finished=True)
    assert record["first_step"] == {"phase": "production", "step": 4000}
    assert record["last_step"] == {"phase": "production", "step": 4000}
    assert record["exit_status"] == 143 and record["finished_unix"] >= record["started_unix"]
    assert json.loads(context.record_path.read_text()) == record


@pytest.mark.parametrize("files, expected", [
    ({}, None),                                                        # no cgroup files: null
    ({"memory.peak": "123456789\n"}, 123456789),                       # cgroup v2
    ({"memory/memory.max_usage_in_bytes": "987654321\n"}, 987654321),  # cgroup v1
    ({"memory.peak": "garbage"}, None),
])
def test_peak_memory_comes_from_the_cgroup_or_is_null(tmp_path, files, expected):
    for name, text in files.items():
        path = tmp_path / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert runrecord.peak_memory_bytes(tmp_path / "cgroup") == expected


def test_without_nvidia_smi_gpu_figures_are_null(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    assert runrecord.gpu_info() is None
    assert runrecord.gpu_utilization_percent() is None


@pytest.mark.parametrize("env, expected", [
    ({}, ("CUDA", "mixed")),
    ({"PROTBENCH_PLATFORM": "OpenCL", "PROTBENCH_PRECISION": "single"}, ("OpenCL", "single")),
    ({"PROTBENCH_PLATFORM": "CPU", "PROTBENCH_PRECISION": "mixed"}, ("CPU", None)),  # CPU has no precision
])
def test_platform_and_precision_are_what_the_script_is_told(env, expected):
    info = runrecord.openmm_info(env)
    assert (info["platform"], info["precision"]) == expected


def test_the_image_digest_is_read_from_a_pinned_image(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi, whatever this machine has
    digest = "sha256:" + "0f" * 32
    record = runrecord.start(_context(tmp_path, PROTBENCH_IMAGE=f"ghcr.io/o/i@{digest}",
                                      POD_MEMORY_REQUEST_BYTES="8589934592"))
    assert record["image_digest"] == digest and record["memory_request_bytes"] == 8 * 2**30
    assert record["peak_memory_bytes"] is None and record["gpu"] is None


def test_recording_never_fails_the_pod(tmp_path, capsys, monkeypatch):
    # A results directory that cannot be created: the helper logs and exits 0.
    blocker = tmp_path / "file"
    blocker.write_text("")
    for name, value in {"PROTBENCH_RESULTS_DIR": str(blocker / "results"), "PROTBENCH_STAGE": "window",
                        "PROTBENCH_TARGET": "villin", "PROTBENCH_FF": VILLIN_FF, "PROTBENCH_REPLICA": "1",
                        "PROTBENCH_WINDOW": "00", "POD_NAME": "pod-1"}.items():
        monkeypatch.setenv(name, value)
    assert runrecord.main(["start"]) == 0
    assert "could not start the run record" in capsys.readouterr().err
    assert runrecord.main(["finish"]) == 2  # usage errors are the caller's bug: status 2
