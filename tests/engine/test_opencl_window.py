"""A villin window on OpenMM's GPU code path (OpenCL via pocl, mixed precision), moved to CPU.

OpenCL shares OpenMM's common GPU kernels with CUDA, so this is the pods'
code path, float32 forces included. pocl compiles kernels slowly: the window
is kept short (1000 production steps).
"""

from __future__ import annotations

import signal

import pytest

from protbench_nrp.engine import state_xml_step

from .conftest import run_window, start_window, wait_for_step
from .test_window import assert_window_exact

pytestmark = [pytest.mark.slow, pytest.mark.opencl]

#: 20 frames of 50 steps in segments of 5 (a checkpoint every 250 steps), on OpenCL mixed.
OPENCL = dict(PLATFORM="OpenCL", PRECISION="mixed", PRODUCTION_LENGTH="0.004", CHECKPOINT="1.0")


def test_a_window_killed_on_opencl_resumes_there_from_its_checkpoint_then_on_cpu_exactly(
        opencl, villin_results, window_files):
    root, files = villin_results.root, window_files
    first = start_window(root, **OPENCL)
    wait_for_step(root / files.progress, "production", 300, first, timeout=240)
    first.send_signal(signal.SIGKILL)  # a lost node: no last checkpoint
    first.wait(timeout=60)
    first.stdout.close()
    killed_at = state_xml_step(root / files.portable_checkpoint)
    assert killed_at is not None and killed_at >= 250 and killed_at % 250 == 0

    second = start_window(root, **OPENCL)
    wait_for_step(root / files.progress, "production", killed_at + 100, second, timeout=240)
    second.send_signal(signal.SIGTERM)
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 143, output
    assert (f"starting from checkpoint villin-amber14-vacuum-production.chk at step {killed_at}"
            in output)  # the OpenCL checkpoint itself, not its portable twin
    stopped_at = state_xml_step(root / files.portable_checkpoint)
    assert stopped_at > killed_at

    moved = run_window(root, **{**OPENCL, "PLATFORM": "CPU"})
    assert moved.returncode == 0, moved.stderr + moved.stdout
    assert "different Platform" in moved.stdout
    assert (f"starting from portable checkpoint villin-amber14-vacuum-production-checkpoint.xml "
            f"at step {stopped_at}" in moved.stdout)
    assert_window_exact(root, files, n_frames=20, frame_steps=50, per_segment=5)
