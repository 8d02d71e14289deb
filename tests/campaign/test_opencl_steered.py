"""Steered MD on OpenMM's GPU code path: OpenCL (pocl) in single precision, a few ps."""

from __future__ import annotations

import numpy as np
import pytest

from protbench_nrp.layout import Campaign
from protbench_nrp.reporters import read_cv_file

from .conftest import VILLIN, run_script, villin_env
from .test_steered import _results, _window_q

pytestmark = [pytest.mark.slow, pytest.mark.opencl]

CAMPAIGN = Campaign(*VILLIN)

#: 0.4 ps of equilibration, then Q0 from 1.0 past 0.94 over 4 ps (1000 steps of 4 fs).
FEW_PS = dict(PROTBENCH_REPLICA="1", PROTBENCH_N_WINDOWS="3", PROTBENCH_CV_START="1.0",
              PROTBENCH_CV_END="0.94", PROTBENCH_STEERED_K="5000", PROTBENCH_PULL_LENGTH="0.004",
              PROTBENCH_PULL_FRAME="0.2", PROTBENCH_EQUIL_LENGTH="0.0004",
              PROTBENCH_EQUIL_TIMESTEP="2", PROTBENCH_EQUIL_FRAME="0.2",
              PROTBENCH_PULL_TIMESTEP="4", PROTBENCH_PLATFORM="OpenCL", PROTBENCH_PRECISION="single")


def test_a_short_pull_on_opencl_single_precision_saves_every_window_structure(
        opencl, villin_setup, tmp_path):
    root = _results(villin_setup, tmp_path)
    result = run_script("run-steered-md.py", "-o", str(root), env=villin_env(**FEW_PS))
    assert result.returncode == 0, result.stdout + result.stderr
    files = CAMPAIGN.steered_files(1)
    steps, q = read_cv_file(root / files.cv_timeseries)
    assert len(q) == 20 and np.all(np.isfinite(q))
    assert q[0] > 0.95 and q.min() < 0.94  # pulled from the native state past the last centre
    rows = [line.split(",") for line in (root / files.pull("out")).read_text().splitlines()
            if not line.startswith("#")]
    assert len(rows) == 20 and np.all(np.isfinite(np.array(rows, dtype=float)))
    for window, centre in enumerate((1.0, 0.97, 0.94)):
        assert _window_q(root, 1, window) == pytest.approx(centre, abs=0.05), f"window {window}"
    assert "blew up" not in result.stdout
