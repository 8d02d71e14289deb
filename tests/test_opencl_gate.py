"""The OpenCL tests never skip under CI=true: a machine without OpenCL fails them loudly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO_ROOT

FLOAT32_TEST = ("tests/engine/test_bias_numerics.py::"
                "test_float32_bias_forces_stay_finite_and_agree_with_double_for_pairs_up_to_half_the_box")


def _run_without_opencl(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["OCL_ICD_VENDORS"] = str(tmp_path)  # an empty directory: the ICD loader finds no OpenCL
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           FLOAT32_TEST], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("ci, rc, outcome", [("true", 1, "2 errors"), (None, 0, "2 skipped")])
def test_a_machine_without_opencl_fails_the_opencl_tests_under_ci_and_skips_them_elsewhere(
        tmp_path, ci, rc, outcome):
    result = _run_without_opencl(tmp_path, ci)
    assert result.returncode == rc, result.stdout
    assert outcome in result.stdout
    assert "install pocl-opencl-icd and ocl-icd-libopencl1" in result.stdout
