"""The pod must be able to check out and run exactly the script named: committed, unmodified, pushed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from protbench_nrp.gitcheck import normalize_url
from protbench_nrp.jobs import STAGE_SCRIPTS

from .conftest import WINDOW_SCRIPT, assert_refused_untouched, git


def launch_one(repo, *extra: str):
    return repo.run("--replicas", "1", "--windows", "0", *extra)


def test_clean_pushed_script_launches(launcher_repo):
    result = launch_one(launcher_repo)
    assert result.returncode == 0, result.stderr
    assert len(launcher_repo.kubectl_calls()) == 1
    assert "pushed to origin" in result.stdout


def test_unpushed_commit_is_refused_with_the_push_command(launcher_repo):
    (launcher_repo.dir / WINDOW_SCRIPT).write_text("#!/usr/bin/env python3\nprint('changed')\n")
    commit = launcher_repo.commit("not pushed yet")
    result = launch_one(launcher_repo)
    assert_refused_untouched(launcher_repo, result, f"commit {commit[:12]} is not on any branch of remote 'origin'",
                             "git push origin main")
    git(launcher_repo.dir, "push", "--quiet", "origin", "main")
    assert launch_one(launcher_repo).returncode == 0


def test_detached_head_not_pushed_says_to_push_to_a_branch(launcher_repo):
    (launcher_repo.dir / "notes.txt").write_text("detached work\n")
    launcher_repo.commit("detached")
    git(launcher_repo.dir, "checkout", "--quiet", "--detach", "HEAD")
    result = launch_one(launcher_repo)
    assert_refused_untouched(launcher_repo, result, "git push origin HEAD:<branch>")


@pytest.mark.parametrize("staged", [False, True], ids=["modified", "staged"])
def test_modified_script_is_refused(launcher_repo, staged):
    (launcher_repo.dir / WINDOW_SCRIPT).write_text("#!/usr/bin/env python3\nprint('edited')\n")
    if staged:
        git(launcher_repo.dir, "add", WINDOW_SCRIPT)
    result = launch_one(launcher_repo)
    assert_refused_untouched(launcher_repo, result, f"script {WINDOW_SCRIPT} has uncommitted changes",
                             f"git commit {WINDOW_SCRIPT}")


def test_untracked_script_is_refused(launcher_repo):
    script = "umbrella-scripts/new-window.py"
    (launcher_repo.dir / script).write_text("print('new')\n")
    launcher_repo.set_constants(SCRIPT_PATH=script)
    result = launch_one(launcher_repo)
    assert_refused_untouched(launcher_repo, result, f"script {script} is not checked in", f"git add {script}")


def test_ignored_script_is_refused_naming_the_rule(launcher_repo):
    gitignore = launcher_repo.dir / ".gitignore"
    gitignore.write_text(gitignore.read_text() + "umbrella-scripts/scratch-*.py\n")
    launcher_repo.commit("ignore scratch scripts")
    git(launcher_repo.dir, "push", "--quiet", "origin", "main")
    line = len(gitignore.read_text().splitlines())
    script = "umbrella-scripts/scratch-window.py"
    (launcher_repo.dir / script).write_text("print('scratch')\n")
    launcher_repo.set_constants(SCRIPT_PATH=script)
    result = launch_one(launcher_repo)
    assert_refused_untouched(launcher_repo, result, f"script {script} is ignored by git",
                             f"pattern 'umbrella-scripts/scratch-*.py' in .gitignore line {line}",
                             f"git add -f {script}")


def test_missing_script_is_refused(launcher_repo):
    launcher_repo.set_constants(SCRIPT_PATH="umbrella-scripts/no-such-script.py")
    result = launch_one(launcher_repo)
    assert_refused_untouched(launcher_repo, result, "script umbrella-scripts/no-such-script.py does not exist")


def test_other_stages_check_their_own_script(launcher_repo):
    setup_script = STAGE_SCRIPTS["setup"]
    with open(launcher_repo.dir / setup_script, "a") as handle:
        handle.write("# an edit not committed\n")
    result = launcher_repo.run("--stage", "setup")
    assert_refused_untouched(launcher_repo, result, f"script {setup_script} has uncommitted changes")
    # The window script is clean, but the pods of every stage check out all of umbrella-scripts/.
    result = launch_one(launcher_repo)
    assert_refused_untouched(launcher_repo, result, f"umbrella-scripts/ has uncommitted changes in {setup_script}")


def test_not_a_repository_is_refused(launcher_repo):
    shutil.rmtree(launcher_repo.dir / ".git")
    result = launch_one(launcher_repo)
    assert_refused_untouched(launcher_repo, result, "is not a git repository with a commit", "git clone")


def test_unreachable_remote_is_refused(launcher_repo):
    shutil.rmtree(launcher_repo.remote)
    result = launch_one(launcher_repo)
    assert_refused_untouched(launcher_repo, result, "could not fetch remote 'origin'", "--dry-run")


def test_the_remote_pods_clone_is_checked_not_just_origin(launcher_repo, tmp_path):
    upstream = tmp_path / "upstream.git"
    git(tmp_path, "init", "--quiet", "--bare", str(upstream))
    git(launcher_repo.dir, "remote", "add", "upstream", str(upstream))
    launcher_repo.set_constants(REPO_URL=str(upstream))
    result = launch_one(launcher_repo)  # HEAD is on origin, but pods clone upstream
    assert_refused_untouched(launcher_repo, result, "is not on any branch of remote 'upstream'",
                             "git push upstream main")
    git(launcher_repo.dir, "push", "--quiet", "upstream", "main")
    result = launch_one(launcher_repo)
    assert result.returncode == 0, result.stderr
    assert "pushed to upstream" in result.stdout


def test_a_commit_on_origin_is_refused_when_the_pods_clone_another_repository(launcher_repo):
    # HEAD is pushed to origin, but no remote of the repository is the one the pods clone.
    elsewhere = "https://github.com/example/elsewhere.git"
    launcher_repo.set_constants(REPO_URL=elsewhere)
    launcher_repo.commit("pods clone elsewhere")
    git(launcher_repo.dir, "push", "--quiet", "origin", "main")
    git(launcher_repo.dir, "remote", "add", "fork", "https://me:secret-token@github.com/me/fork.git")
    result = launch_one(launcher_repo)
    assert "secret-token" not in result.stderr  # remotes are named, credentials in their URLs are not
    assert_refused_untouched(launcher_repo, result, f"no remote of this repository has REPO_URL {elsewhere}",
                             "fork (https://github.com/me/fork.git)", f"origin ({launcher_repo.remote})",
                             f"git remote add pods {elsewhere} && git push pods HEAD",
                             "set REPO_URL to your fork's URL")


@pytest.mark.parametrize("spelling", ["{remote}/", "file://{remote}", "{stem}"], ids=["slash", "file-url", "no-.git"])
def test_another_spelling_of_the_remote_url_is_the_same_repository(launcher_repo, spelling):
    remote = launcher_repo.remote
    launcher_repo.set_constants(REPO_URL=spelling.format(remote=remote, stem=str(remote).removesuffix(".git")))
    launcher_repo.commit("REPO_URL spelled differently")
    git(launcher_repo.dir, "push", "--quiet", "origin", "main")
    result = launch_one(launcher_repo)
    assert result.returncode == 0, result.stderr
    assert "pushed to origin" in result.stdout


# -- the library and pod scripts under umbrella-scripts/ ----------------------------------------

@pytest.mark.parametrize("path, edit", [
    ("umbrella-scripts/protbench_nrp/layout.py", "modify"),
    ("umbrella-scripts/pod/run-job.sh", "stage"),
    ("umbrella-scripts/protbench_nrp/helpers.py", "create"),
    ("umbrella-scripts/pod/extra/new-step.sh", "create"),
])
def test_uncommitted_changes_under_umbrella_scripts_are_refused_naming_the_file(launcher_repo, path, edit):
    target = launcher_repo.dir / path
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a") as handle:
        handle.write("# not committed\n")
    if edit == "stage":
        git(launcher_repo.dir, "add", path)
    result = launch_one(launcher_repo)
    what = "untracked files" if edit == "create" else "uncommitted changes in"
    assert_refused_untouched(launcher_repo, result, f"umbrella-scripts/ has {what} {path}",
                             "git add umbrella-scripts && git commit")


def test_ignored_files_under_umbrella_scripts_and_changes_elsewhere_do_not_block(launcher_repo):
    cache = launcher_repo.dir / "umbrella-scripts" / "protbench_nrp" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "layout.cpython-311.pyc").write_bytes(b"ignored by .gitignore")
    (launcher_repo.dir / "notes.txt").write_text("my notes, not something a pod runs\n")
    result = launch_one(launcher_repo)
    assert result.returncode == 0, result.stderr


def test_every_changed_file_is_named(launcher_repo):
    for name in ("a.py", "b.py"):
        (launcher_repo.dir / "umbrella-scripts" / name).write_text("print()\n")
    with open(launcher_repo.dir / "umbrella-scripts/protbench_nrp/jobs.py", "a") as handle:
        handle.write("# an edit not committed\n")
    result = launch_one(launcher_repo)
    assert_refused_untouched(launcher_repo, result,
                             "uncommitted changes in umbrella-scripts/protbench_nrp/jobs.py and untracked "
                             "files umbrella-scripts/a.py, umbrella-scripts/b.py")


# -- the executable bit the pod needs to run the script -------------------------------------------

@pytest.mark.parametrize("stage", ["window", "setup", "steered"])
def test_script_committed_without_the_executable_bit_is_refused(launcher_repo, stage):
    script = WINDOW_SCRIPT if stage == "window" else STAGE_SCRIPTS[stage]
    (launcher_repo.dir / script).chmod(0o644)
    launcher_repo.commit("lost the executable bit")
    git(launcher_repo.dir, "push", "--quiet", "origin", "main")
    result = launcher_repo.run("--stage", stage, "--replicas", "1", "--windows", "0")
    assert_refused_untouched(launcher_repo, result,
                             f"script {script} is committed without the executable bit (mode 100644",
                             f"git update-index --chmod=+x {script}, commit and push")
    git(launcher_repo.dir, "update-index", "--chmod=+x", script)
    (launcher_repo.dir / script).chmod(0o755)
    launcher_repo.commit("executable again")
    git(launcher_repo.dir, "push", "--quiet", "origin", "main")
    result = launcher_repo.run("--stage", stage, "--replicas", "1", "--windows", "0")
    assert result.returncode == 0, result.stderr


def test_only_the_launched_stages_script_must_be_executable(launcher_repo):
    (launcher_repo.dir / STAGE_SCRIPTS["setup"]).chmod(0o644)
    launcher_repo.commit("setup script not executable")
    git(launcher_repo.dir, "push", "--quiet", "origin", "main")
    assert launch_one(launcher_repo).returncode == 0  # windows run SCRIPT_PATH, which is executable


def test_spellings_of_one_repository_url_compare_equal(tmp_path):
    https = normalize_url("https://github.com/OpenForceField/proteinbenchmark-nrp.git", tmp_path)
    assert normalize_url("git@github.com:openforcefield/proteinbenchmark-nrp.git", tmp_path) == https
    assert normalize_url("ssh://git@github.com/openforcefield/proteinbenchmark-nrp/", tmp_path) == https
    assert normalize_url("https://github.com/openforcefield/proteinbenchmark", tmp_path) != https
    assert normalize_url("remote.git", tmp_path) == normalize_url(str(tmp_path / "remote.git"), Path("/"))
    assert normalize_url(f"file://{tmp_path}/remote.git", tmp_path) == normalize_url("remote", tmp_path)
