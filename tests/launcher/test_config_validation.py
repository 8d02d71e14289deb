"""Bad constants are refused with the constant named and the fix, before anything is written or applied."""

from __future__ import annotations

import pytest

from .conftest import assert_refused_untouched

CASES = {
    "empty initials": ({"INITIALS": ""}, "INITIALS '' must be your initials, letters only"),
    "initials with a dot": ({"INITIALS": "j.m"}, "INITIALS 'j.m' must be your initials"),
    "initials with a digit": ({"INITIALS": "jm2"}, "INITIALS 'jm2' must be your initials"),
    "no windows": ({"N_WINDOWS": 0}, "N_WINDOWS 0 must be a whole number of at least 1"),
    "windows as text": ({"N_WINDOWS": "31"}, "N_WINDOWS '31' must be a whole number"),
    "one window to pull through": ({"N_WINDOWS": 1, "STAGE": "steered"},
                                   "N_WINDOWS (the launcher passes it as PROTBENCH_N_WINDOWS): "),
    "no replicas": ({"N_REPLICAS": 0}, "N_REPLICAS 0 must be a whole number of at least 1"),
    "replica out of range": ({"REPLICAS": (4,)}, "REPLICAS (--replicas) selects 4, outside 1..3"),
    "replica zero": ({"REPLICAS": (0, 1)}, "REPLICAS (--replicas) selects 0, outside 1..3"),
    "window out of range": ({"WINDOWS": (-1,)}, "WINDOWS (--windows) selects -1, outside 0..30"),
    "empty selection": ({"WINDOWS": ()}, "WINDOWS (--windows) selects nothing"),
    "repeated selection": ({"WINDOWS": (2, 2)}, "WINDOWS (--windows) names some more than once"),
    "unknown stage": ({"STAGE": "production"}, "STAGE 'production' must be one of setup, steered, window"),
    "cuda major only": ({"CUDA_VERSION": "12"}, "CUDA_VERSION '12' must be MAJOR.MINOR"),
    "cuda with patch": ({"CUDA_VERSION": "12.4.1"}, "CUDA_VERSION '12.4.1' must be MAJOR.MINOR"),
    "env name": ({"EXTRA_ENV": {"1BAD": "x"}}, "EXTRA_ENV key '1BAD' is not an environment variable name"),
    "env value": ({"EXTRA_ENV": {"PROTBENCH_PRODUCTION_LENGTH": 100}},
                  "EXTRA_ENV['PROTBENCH_PRODUCTION_LENGTH'] is 100; environment values must be strings"),
    "env clash": ({"EXTRA_ENV": {"PROTBENCH_WINDOW": "03"}},
                  "EXTRA_ENV sets PROTBENCH_WINDOW, which the launcher sets itself"),
    "target with space": ({"TARGET": "gb 3"}, "TARGET 'gb 3' must be a non-empty name of letters, digits"),
    "ff with slash": ({"FF": "a/b"}, "FF 'a/b' must be a non-empty name of letters, digits and '.', '_', '+', '-' "
                                     "only (not '/')"),
    "target with a glob": ({"TARGET": "gb*"}, "TARGET 'gb*' must be a non-empty name"),
    "ff with a bracket": ({"FF": "ff[1]"}, "(not '[' ']')"),
    "ff with a dollar": ({"FF": "ff$HOME"}, "FF 'ff$HOME' must be a non-empty name"),
    "ff with a quote": ({"FF": "ff'1"}, "file patterns the pods copy by"),
    "empty target": ({"TARGET": ""}, "TARGET '' must be a non-empty name"),
    "oe license": ({"EXTRA_ENV": {"OE_LICENSE": "/elsewhere/oe_license.txt"}},
                   "EXTRA_ENV sets OE_LICENSE, but k8s_template.yaml sets it to where the OpenEye license "
                   "secret is mounted (OPENEYE_SECRET chooses the license); remove it from EXTRA_ENV"),
    "results mount": ({"EXTRA_ENV": {"PROTBENCH_RESULTS_DIR": "/tmp"}},
                      "EXTRA_ENV sets PROTBENCH_RESULTS_DIR, but the pod's commands take a mount point"),
    "repo mount": ({"EXTRA_ENV": {"PROTBENCH_REPO_DIR": "/tmp"}}, "EXTRA_ENV sets PROTBENCH_REPO_DIR, but"),
    "rclone config": ({"EXTRA_ENV": {"RCLONE_CONFIG": "/tmp/r.conf"}}, "EXTRA_ENV sets RCLONE_CONFIG, but"),
    "bucket": ({"BUCKET": "Bad_Bucket"}, "BUCKET 'Bad_Bucket' is not an S3 bucket name"),
    "remote": ({"RCLONE_REMOTE": "nrp:"}, "RCLONE_REMOTE 'nrp:' must be the name of a remote"),
    "secret": ({"RCLONE_SECRET": "JM_rclone"}, "RCLONE_SECRET 'JM_rclone' is not a Kubernetes secret name"),
    "script outside": ({"SCRIPT_PATH": "../elsewhere.py"}, "SCRIPT_PATH '../elsewhere.py' must be a path inside"),
    "no image": ({"IMAGE": ""}, "IMAGE '' must be set"),
    "repo url with space": ({"REPO_URL": "https://example.org/a b.git"}, "REPO_URL"),
}


@pytest.mark.parametrize("constants, message", CASES.values(), ids=CASES.keys())
def test_bad_constant_is_refused_before_any_side_effect(launcher_repo, constants, message):
    launcher_repo.set_constants(**constants)
    assert_refused_untouched(launcher_repo, launcher_repo.run(), message)


def test_a_dry_run_refuses_too_and_prints_no_manifest(launcher_repo):
    launcher_repo.set_constants(EXTRA_ENV={"PROTBENCH_WINDOW": "03"})
    result = launcher_repo.run("--dry-run")
    assert result.returncode == 1 and result.stdout == ""
    assert "EXTRA_ENV sets PROTBENCH_WINDOW" in result.stderr


def test_every_problem_is_reported_at_once(launcher_repo):
    launcher_repo.set_constants(INITIALS="", N_WINDOWS=0, CUDA_VERSION="twelve")
    result = launcher_repo.run("--dry-run")
    assert result.returncode == 1
    for constant in ("INITIALS", "N_WINDOWS", "CUDA_VERSION"):
        assert f"\n  - {constant} " in result.stderr


def test_names_of_letters_digits_and_dot_underscore_plus_minus_pass(launcher_repo):
    launcher_repo.set_constants(TARGET="T4_lysozyme.v2", FF="ff14SB+tip3p-1.0")
    result = launcher_repo.run("--dry-run", "--stage", "setup")
    assert result.returncode == 0, result.stderr
