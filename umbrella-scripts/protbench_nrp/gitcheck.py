"""Checks that a pod can run exactly the script the launcher names.

A pod clones ``REPO_URL`` and checks out ``PROTBENCH_SCRIPT_COMMIT``. If the
script is not committed, or is changed since, the pod runs something other
than what the scientist sees; if the commit was never pushed, the pod's
checkout fails hours later when the Job is finally scheduled. These checks
run on the launching machine, before anything reaches the cluster, and each
failure says what to do.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Longest wait for one git command; a fetch over a bad network must not hang a launch.
GIT_TIMEOUT_S = 120

#: What the manifests record as the commit when there is no git repository (dry runs only).
NO_COMMIT = "uncommitted"


class GitCheckError(RuntimeError):
    """The repository is not in a state a pod could reproduce."""


@dataclass(frozen=True)
class Remote:
    """The git remote the pushed-check used."""

    name: str
    url: str
    matches_repo_url: bool


def _git(repo_dir: Path, *args: str) -> subprocess.CompletedProcess:
    # No prompts: a credential question would block the launch forever.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        return subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True,
                              env=env, timeout=GIT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise GitCheckError("git is not installed (or not on PATH); install git to launch") from None
    except subprocess.TimeoutExpired:
        raise GitCheckError(f"'git {' '.join(args)}' took longer than {GIT_TIMEOUT_S} s; "
                            f"check your network and try again") from None


def head_commit(repo_dir: Path) -> str | None:
    """The commit checked out in ``repo_dir``, or ``None`` outside a repository or before the first commit."""
    try:
        result = _git(repo_dir, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    except GitCheckError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def require_head_commit(repo_dir: Path) -> str:
    """The commit checked out in ``repo_dir``.

    Raises
    ------
    GitCheckError
        Outside a git repository or before its first commit.
    """
    commit = head_commit(repo_dir)
    if commit is None:
        raise GitCheckError(
            f"{repo_dir} is not a git repository with a commit; pods clone the repository and check "
            f"out a commit, so launch from a clone of it (git clone REPO_URL) with your changes committed"
        )
    return commit


def check_script_committed(repo_dir: Path, script_path: str) -> None:
    """The script exists, is tracked, is not ignored, and has no uncommitted changes.

    Raises
    ------
    GitCheckError
        Naming the script, what is wrong and the git command that fixes it.
    """
    if not (repo_dir / script_path).is_file():
        raise GitCheckError(f"script {script_path} does not exist in {repo_dir}; set SCRIPT_PATH "
                            f"(or the stage) to a script of this repository")
    if _git(repo_dir, "ls-files", "--error-unmatch", "--", script_path).returncode != 0:
        ignored = _git(repo_dir, "check-ignore", "--verbose", "--", script_path)
        if ignored.returncode == 0:
            source, _, rule = ignored.stdout.split("\t")[0].partition(":")
            line, _, pattern = rule.partition(":")
            raise GitCheckError(
                f"script {script_path} is ignored by git (pattern {pattern!r} in {source} line {line}), "
                f"so no commit holds it and the pod's checkout would lack it; drop that pattern (or "
                f"git add -f {script_path}), commit and push"
            )
        raise GitCheckError(
            f"script {script_path} is not checked in, so the pod's checkout would lack it; "
            f"git add {script_path}, commit and push"
        )
    if _git(repo_dir, "status", "--porcelain", "--", script_path).stdout.strip():
        raise GitCheckError(
            f"script {script_path} has uncommitted changes, so the pod would run the committed "
            f"version instead; commit them (git commit {script_path}) and push"
        )


def normalize_url(url: str, base: Path) -> str:
    """A key under which two spellings of one repository URL compare equal.

    ``https://github.com/o/r.git``, ``git@github.com:o/r`` and
    ``ssh://git@github.com/o/r/`` all become ``github.com/o/r``; a local path
    becomes its resolved absolute path, relative ones taken from ``base``.
    """
    url = url.strip().rstrip("/")
    if url.startswith("file://"):
        return _local_key(url[len("file://"):], base)
    if "://" in url:
        rest = url.split("://", 1)[1]
        authority, _, path = rest.partition("/")
        host = authority.rpartition("@")[2].split(":")[0]
    elif ":" in url and "/" not in url.split(":", 1)[0]:  # scp-like [user@]host:path
        authority, _, path = url.partition(":")
        host = authority.rpartition("@")[2]
    else:
        return _local_key(url, base)
    return f"{host}/{path.strip('/').removesuffix('.git')}".lower()


def _local_key(path: str, base: Path) -> str:
    resolved = (base / path).resolve()
    return str(resolved.with_name(resolved.name.removesuffix(".git")))


def find_remote(repo_dir: Path, repo_url: str) -> Remote:
    """The remote whose URL is ``repo_url`` (the one pods clone), else ``origin``.

    Raises
    ------
    GitCheckError
        When neither exists.
    """
    listing = _git(repo_dir, "remote", "-v").stdout
    remotes = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "(fetch)":
            remotes[parts[0]] = parts[1]
    wanted = normalize_url(repo_url, repo_dir)
    for name, url in sorted(remotes.items()):
        if normalize_url(url, repo_dir) == wanted:
            return Remote(name, url, True)
    if "origin" in remotes:
        return Remote("origin", remotes["origin"], False)
    raise GitCheckError(
        f"this repository has no remote for {repo_url} (REPO_URL, which the pods clone) and no "
        f"'origin'; add it (git remote add origin {repo_url}) and push your commit"
    )


def check_pushed(repo_dir: Path, repo_url: str, commit: str) -> Remote:
    """``commit`` is reachable from a branch of the remote the pods clone, after fetching it.

    Raises
    ------
    GitCheckError
        When the remote cannot be fetched or no branch of it contains the commit.
    """
    remote = find_remote(repo_dir, repo_url)
    fetched = _git(repo_dir, "fetch", "--quiet", "--no-tags", remote.name)
    if fetched.returncode != 0:
        raise GitCheckError(
            f"could not fetch remote {remote.name!r} ({remote.url}) to check that commit "
            f"{commit[:12]} is pushed: {fetched.stderr.strip() or 'git fetch failed'}; check the "
            f"network and your access, or preview with --dry-run"
        )
    branches = _git(repo_dir, "for-each-ref", "--contains", commit, "--format=%(refname:short)",
                    f"refs/remotes/{remote.name}/").stdout.split()
    if not branches:
        branch = _git(repo_dir, "symbolic-ref", "--quiet", "--short", "HEAD").stdout.strip()
        push = f"git push {remote.name} {branch}" if branch else f"git push {remote.name} HEAD:<branch>"
        where = "" if remote.matches_repo_url else f"; note that pods clone {repo_url}, not this remote"
        raise GitCheckError(
            f"commit {commit[:12]} is not on any branch of remote {remote.name!r} ({remote.url}), so "
            f"the pods could not check it out; push it first: {push}{where}"
        )
    return remote

