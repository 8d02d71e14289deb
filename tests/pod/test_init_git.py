"""The init container that checks the repository out (init-git), as the pod's user."""

from __future__ import annotations

import subprocess

from tests.pod.harness import POD_SCRIPTS, POD_UID, as_pod_user, fs_group_volume, requires_root


def _git(*args, cwd) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _origin(path):
    """A repository standing in for the remote the pods clone, with two commits."""
    path.mkdir()
    _git("init", "--quiet", cwd=path)
    (path / POD_SCRIPTS).mkdir(parents=True)
    (path / POD_SCRIPTS / "copy-in.sh").write_text("first\n")
    _git("add", ".", cwd=path)
    _git("commit", "--quiet", "-m", "first", cwd=path)
    first = _git("rev-parse", "HEAD", cwd=path)
    (path / POD_SCRIPTS / "copy-in.sh").write_text("second\n")
    _git("commit", "--quiet", "-am", "second", cwd=path)
    second = _git("rev-parse", "HEAD", cwd=path)
    # a remote is served by someone else; locally, git insists its owner is the user cloning it
    for item in [path, *path.rglob("*")]:
        fs_group_volume(item, owner=True)
    return first, second


@requires_root
def test_init_git_checks_out_the_commit_as_the_pod_user(make_pod, shared_dir):
    first, second = _origin(shared_dir / "origin")
    pod = make_pod()
    pod.home = shared_dir / "home"
    pod.home.mkdir()
    fs_group_volume(pod.home, owner=True)
    repo = shared_dir / "repo"  # the empty volume the kubelet mounts
    repo.mkdir()
    fs_group_volume(repo)
    user = as_pod_user()
    env = dict(PROTBENCH_REPO_DIR=str(repo), PROTBENCH_REPO_URL=str(shared_dir / "origin"))

    result = pod.run("init-git", prefix=user, PROTBENCH_SCRIPT_COMMIT=first, **env)

    assert result.returncode == 0, result.stderr
    assert f"at {first}" in result.stdout
    assert (repo / POD_SCRIPTS / "copy-in.sh").read_text() == "first\n"
    assert (repo / POD_SCRIPTS / "copy-in.sh").stat().st_uid == POD_UID

    # a restarted init container finds the checkout and moves it to the commit asked for
    again = pod.run("init-git", prefix=user, PROTBENCH_SCRIPT_COMMIT=second, **env)
    assert again.returncode == 0, again.stderr
    assert (repo / POD_SCRIPTS / "copy-in.sh").read_text() == "second\n"

    unknown = pod.run("init-git", prefix=user, PROTBENCH_SCRIPT_COMMIT="1" * 40, **env)
    assert unknown.returncode != 0
    assert "1" * 40 in unknown.stderr
