"""Every launch and dry run says whose initials, bucket, rclone secret and namespace it uses."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest

from protbench_nrp.cluster import kube_namespace
from protbench_nrp.launcher import SHIPPED_DEFAULTS

from .conftest import LAUNCHER, REPO_ROOT, git

KUBECONFIG = """apiVersion: v1
kind: Config
current-context: {current}
contexts:
  - name: nautilus
    context: {{cluster: nautilus, user: me, namespace: ab-lab}}
  - name: bare
    context: {{cluster: nautilus, user: me}}
"""


def write_kubeconfig(path, current="nautilus", text=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(KUBECONFIG.format(current=current) if text is None else text)
    return path


def identity(stderr: str, verb: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith(f"{verb} as INITIALS=")]
    return line


def test_the_shipped_defaults_are_the_launchers_own_constants():
    # The note "the shipped defaults" is true only while the file ships these values.
    constants = runpy.run_path(str(REPO_ROOT / LAUNCHER))
    assert {name: constants[name] for name in SHIPPED_DEFAULTS} == {
        name: value for name, (_field, value) in SHIPPED_DEFAULTS.items()}


def test_a_dry_run_with_the_shipped_defaults_says_they_are_someone_elses(launcher_repo):
    # The test launcher keeps the shipped BUCKET and RCLONE_SECRET (and sets INITIALS "tst").
    result = launcher_repo.run("--dry-run", "--stage", "setup")
    assert result.returncode == 0, result.stderr
    assert identity(result.stderr, "Dry run") == (
        f"Dry run as INITIALS=tst: bucket s3://proteinbenchmark-jm-bucket (rclone remote nrp), rclone secret "
        f"jm-rclone-config, namespace unknown (no kubeconfig in {launcher_repo.home}/.kube/config: set up "
        f"kubectl for Nautilus first, https://docs.nrp.ai/) (BUCKET and RCLONE_SECRET are the shipped "
        f"defaults, another person's: edit the constants at the top of run-umbrella-windows.py)")


def test_a_dry_run_with_your_own_constants_names_them_and_the_kubeconfigs_namespace(launcher_repo):
    launcher_repo.set_constants(BUCKET="ab-bucket", RCLONE_SECRET="ab-rclone-config")
    write_kubeconfig(launcher_repo.home / ".kube" / "config")
    result = launcher_repo.run("--dry-run", "--stage", "setup")
    assert result.returncode == 0, result.stderr
    assert identity(result.stderr, "Dry run") == (
        "Dry run as INITIALS=tst: bucket s3://ab-bucket (rclone remote nrp), rclone secret ab-rclone-config, "
        "namespace ab-lab (context nautilus)")
    assert "shipped default" not in result.stderr


def test_the_checked_in_launcher_says_all_three_are_the_shipped_defaults():
    result = subprocess.run([sys.executable, str(REPO_ROOT / LAUNCHER), "--dry-run", "--stage", "setup"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    line = identity(result.stderr, "Dry run")
    assert line.startswith("Dry run as INITIALS=jm: bucket s3://proteinbenchmark-jm-bucket (rclone remote nrp), "
                           "rclone secret jm-rclone-config, namespace ")
    assert line.endswith("(INITIALS, BUCKET and RCLONE_SECRET are the shipped defaults, another person's: "
                         "edit the constants at the top of run-umbrella-windows.py)")


def test_a_launch_and_a_relaunch_say_it_and_still_go_ahead_with_the_shipped_defaults(launcher_repo):
    launcher_repo.set_constants(INITIALS="jm")
    launcher_repo.commit("the seed's initials")
    git(launcher_repo.dir, "push", "--quiet", "origin", "main")  # a launch checks the commit is pushed
    write_kubeconfig(launcher_repo.home / ".kube" / "config", current="bare")
    result = launcher_repo.run("--replicas", "1", "--windows", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert identity(result.stderr, "Launching") == (
        "Launching as INITIALS=jm: bucket s3://proteinbenchmark-jm-bucket (rclone remote nrp), rclone secret "
        "jm-rclone-config, namespace default (context bare sets none: kubectl config set-context --current "
        "--namespace=NAME) (INITIALS, BUCKET and RCLONE_SECRET are the shipped defaults, another person's: "
        "edit the constants at the top of run-umbrella-windows.py)")
    assert "Submitted 1 Jobs" in result.stdout
    launcher_repo.set_job("pb-jm-gb3-null-003-pair-opc3-1-00", "failed")
    relaunched = launcher_repo.run("--relaunch", "--replicas", "1", "--windows", "0")
    assert relaunched.returncode == 0, relaunched.stdout + relaunched.stderr
    assert identity(relaunched.stderr, "Replacing Jobs").startswith("Replacing Jobs as INITIALS=jm: bucket ")


def test_refused_constants_are_refused_before_any_identity_line(launcher_repo):
    launcher_repo.set_constants(INITIALS="j.m.")
    result = launcher_repo.run("--dry-run")
    assert result.returncode == 1
    assert " as INITIALS=" not in result.stderr and "INITIALS 'j.m.' must be your initials" in result.stderr


# -- the namespace, read from the kubeconfig as kubectl reads it ---------------------------------------

def test_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path):
    # The first file to set current-context wins; the context is defined in the second.
    first = write_kubeconfig(tmp_path / "a", text="apiVersion: v1\nkind: Config\ncurrent-context: nautilus\n")
    second = write_kubeconfig(tmp_path / "b", current="bare")
    missing = tmp_path / "absent"  # kubectl skips a listed file that does not exist
    environ = {"KUBECONFIG": f"{missing}:{first}:{second}", "HOME": str(tmp_path / "home")}
    assert kube_namespace(environ) == "ab-lab (context nautilus)"


@pytest.mark.parametrize("text, expected", [
    (None, "unknown (no kubeconfig in {home}/.kube/config: set up kubectl for Nautilus first, https://docs.nrp.ai/)"),
    ("apiVersion: v1\nkind: Config\ncontexts: []\n",
     "unknown (the kubeconfig in {home}/.kube/config names no current context: kubectl config use-context NAME)"),
    (KUBECONFIG.format(current="elsewhere"),
     "unknown (current context elsewhere is not defined in the kubeconfig in {home}/.kube/config)"),
    ("current-context: [unclosed\n", "unknown (cannot read the kubeconfig {home}/.kube/config: "),
], ids=["no-kubeconfig", "no-current-context", "undefined-context", "not-yaml"])
def test_what_cannot_be_told_of_the_namespace_is_said_not_guessed(tmp_path, text, expected):
    home = tmp_path / "home"
    if text is not None:
        write_kubeconfig(home / ".kube" / "config", text=text)
    assert kube_namespace({"HOME": str(home)}).startswith(expected.format(home=home))
