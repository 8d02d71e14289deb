"""The linters as a developer runs them by hand: plain commands, configured by files in the repository."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO_ROOT

POD_SCRIPTS = REPO_ROOT / "umbrella-scripts" / "pod"


@pytest.mark.parametrize("name", sorted(p.name for p in POD_SCRIPTS.glob("*.sh")))
def test_a_plain_shellcheck_of_one_pod_script_follows_lib_sh(name, tmp_path):
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not on PATH; run the tests with .venv/bin on PATH (make test)"
    # No flags, from another directory: .shellcheckrc alone makes it follow `source lib.sh`,
    # without which lib.sh's functions and variables would count as undefined.
    result = subprocess.run([shellcheck, str(POD_SCRIPTS / name)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_passes_with_the_projects_configuration():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is not on PATH; run the tests with .venv/bin on PATH (make test)"
    result = subprocess.run([ruff, "check", "--no-cache", str(REPO_ROOT)], cwd=REPO_ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
