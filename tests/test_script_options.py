"""Every in-pod script says which required setting is missing, before writing anything."""

import os
import subprocess
import sys

import pytest

from tests.conftest import SCRIPTS_DIR


@pytest.mark.parametrize("script,missing,given", [
    ("run-umbrella-window.py", "PROTBENCH_TARGET", {"PROTBENCH_FF": "ff", "PROTBENCH_REPLICA": "1",
                                                    "PROTBENCH_WINDOW": "00"}),
    ("run-umbrella-window.py", "PROTBENCH_WINDOW", {"PROTBENCH_TARGET": "villin", "PROTBENCH_FF": "ff",
                                                    "PROTBENCH_REPLICA": "1"}),
    ("run-steered-md.py", "PROTBENCH_REPLICA", {"PROTBENCH_TARGET": "villin", "PROTBENCH_FF": "ff"}),
])
def test_missing_required_setting_is_named(tmp_path, script, missing, given):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTBENCH_")}
    env.update(given, PROTBENCH_RESULTS_DIR=str(tmp_path / "results"))
    result = subprocess.run([sys.executable, str(SCRIPTS_DIR / script)], env=env,
                            capture_output=True, text=True, timeout=120)
    flag = "--" + missing.removeprefix("PROTBENCH_").lower()
    assert result.returncode == 2
    assert f"Missing option '{flag}'" in result.stderr and missing in result.stderr
    assert not (tmp_path / "results").exists()
