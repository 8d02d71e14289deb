"""Helpers for running the campaign's scripts as a user (or a pod) would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, REPRODUCIBLE_ENV, SCRIPTS_DIR

VILLIN = ("villin", "amber14-vacuum")


def script_env(**overrides: str) -> dict[str, str]:
    """The caller's environment without any PROTBENCH_* leaking in, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTBENCH_")}
    env.update(overrides)
    return env


def run_script(script: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``umbrella-scripts/<script>`` (or a repository-root script) with this Python."""
    path = SCRIPTS_DIR / script if (SCRIPTS_DIR / script).exists() else REPO_ROOT / script
    return subprocess.run([sys.executable, str(path), *args], env=env or script_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def villin_env(**overrides: str) -> dict[str, str]:
    settings = dict(PROTBENCH_TARGET=VILLIN[0], PROTBENCH_FF=VILLIN[1], PROTBENCH_PLATFORM="CPU",
                    **REPRODUCIBLE_ENV)
    return script_env(**{**settings, **overrides})


@pytest.fixture(scope="session")
def villin_setup(tmp_path_factory) -> Path:
    """A results root holding a finished villin setup made by the setup script (read-only)."""
    root = tmp_path_factory.mktemp("villin-setup")
    result = run_script("setup-umbrella-system.py", "-o", str(root), env=villin_env())
    assert result.returncode == 0, result.stderr
    return root
