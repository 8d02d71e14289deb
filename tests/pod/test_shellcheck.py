"""The pod scripts pass shellcheck; copy-in.sh and lib.sh as POSIX sh (they run under busybox)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO_ROOT
from tests.pod.harness import POD_SCRIPTS

SCRIPTS = {"copy-in.sh": "sh", "lib.sh": "sh", "copy-out.sh": "bash", "run-job.sh": "bash",
           "pre-stop.sh": "bash"}


@pytest.mark.parametrize("name, shell", sorted(SCRIPTS.items()))
def test_pod_script_passes_shellcheck(name, shell):
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not on PATH; run the tests with .venv/bin on PATH (make test)"
    # -x: follow `source lib.sh`, so that what lib.sh defines counts as defined
    result = subprocess.run([shellcheck, "--external-sources", "--shell", shell, "--severity", "style",
                             str(REPO_ROOT / POD_SCRIPTS / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_pod_script_is_checked():
    assert sorted(p.name for p in (REPO_ROOT / POD_SCRIPTS).glob("*.sh")) == sorted(SCRIPTS)
