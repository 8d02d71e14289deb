"""Checks that a pod can run exactly the script the launcher names.

A pod clones ``REPO_URL`` and checks out ``PROTBENCH_SCRIPT_COMMIT``. If the
script, or anything under ``umbrella-scripts/`` it imports or the pod runs, is
not committed or is changed since, the pod runs something other than what the
scientist sees; a script committed without the executable bit cannot be run;
if the commit was never pushed to that very repository, the pod's checkout
fails hours later when the Job is finally scheduled. These checks run on the
launching machine, before anything reaches the cluster, and each failure says
what to do.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ProtbenchError

#: Longest wait for one git command; a fetch over a bad network must not hang a launch.
GIT_TIMEOUT_S = 120

#: What the manifests record as the commit when there is no git repository (dry runs only).
NO_COMMIT = "uncommitted"


class GitCheckError(ProtbenchError, RuntimeError):
    """The repository is not in a state a pod could reproduce."""


@dataclass(frozen=True)
class Remote:
    """The git remote of this repository whose URL is ``REPO_URL``, the repository the pods clone."""

    name: str
    url: str


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


#: The tree a pod imports and runs from: the scripts, their library and the pod's shell scripts.
POD_TREE = "umbrella-scripts"

#: Git's file mode of an executable file.
EXECUTABLE_MODE = "100755"

#: How many changed files a refusal names before it says "and N more".
LISTED_FILES = 10


def check_tree_committed(repo_dir: Path, tree: str = POD_TREE) -> None:
    """Nothing under ``tree`` is modified, staged or untracked (ignored files aside).

    The pod checks out the commit, so a library module or pod script changed
    here but not committed would differ from what the scientist tested, and
    one never added would be missing in the pod.

    Raises
    ------
    GitCheckError
        Naming the files and the git commands that fix it.
    """
    status = _git(repo_dir, "status", "--porcelain", "--untracked-files=all", "--", tree)
    if status.returncode != 0:
        raise GitCheckError(f"git status failed in {repo_dir}: {status.stderr.strip()}")
    lines = [line for line in status.stdout.splitlines() if line.strip()]
    if not lines:
        return
    untracked = [line[3:] for line in lines if line.startswith("??")]
    changed = [line[3:] for line in lines if not line.startswith("??")]
    parts = []
    if changed:
        parts.append(f"uncommitted changes in {_listing(changed)}")
    if untracked:
        parts.append(f"untracked files {_listing(untracked)}")
    raise GitCheckError(
        f"{tree}/ has {' and '.join(parts)}; the pods import and run {tree}/ as committed, so they "
        f"would run something else. Commit them (git add {tree} && git commit) and push, or remove "
        f"(or git-ignore) files the pods do not need"
    )


def _listing(paths: list[str]) -> str:
    shown = ", ".join(paths[:LISTED_FILES])
    return shown + (f" and {len(paths) - LISTED_FILES} more" if len(paths) > LISTED_FILES else "")


def check_executable(repo_dir: Path, script_path: str) -> None:
    """The committed ``script_path`` has git's executable mode, so the pod can run it directly.

    Raises
    ------
    GitCheckError
        Naming the script and the ``git update-index --chmod=+x`` that fixes it.
    """
    entry = _git(repo_dir, "ls-files", "--stage", "--", script_path).stdout.split()
    mode = entry[0] if entry else "none"
    if mode != EXECUTABLE_MODE:
        raise GitCheckError(
            f"script {script_path} is committed without the executable bit (mode {mode}, not "
            f"{EXECUTABLE_MODE}), so the pod cannot run it; run git update-index --chmod=+x "
            f"{script_path}, commit and push"
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


def _shown(url: str) -> str:
    """``url`` without a user or token before ``@`` (https://user:token@host/...), for messages."""
    return re.sub(r"^(https?://)[^/@]*@", r"\1", url)


def _local_key(path: str, base: Path) -> str:
    resolved = (base / path).resolve()
    return str(resolved.with_name(resolved.name.removesuffix(".git")))


def find_remote(repo_dir: Path, repo_url: str) -> Remote:
    """The remote of ``repo_dir`` whose URL is ``repo_url`` (the one pods clone).

    URLs compare as :func:`normalize_url` keys, so ``.git``, a trailing slash
    and the https and ssh spellings of one GitHub repository all match.

    Raises
    ------
    GitCheckError
        When no remote has that URL: a commit pushed elsewhere proves nothing
        about the repository the pods clone.
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
            return Remote(name, url)
    have = (", ".join(f"{name} ({_shown(url)})" for name, url in sorted(remotes.items()))
            if remotes else "none")
    raise GitCheckError(
        f"no remote of this repository has REPO_URL {repo_url}, the repository the pods clone "
        f"(remotes: {have}), so there is no telling whether your commit is there; add it, e.g. "
        f"git remote add pods {repo_url} && git push pods HEAD, or set REPO_URL to your fork's URL"
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
            f"could not fetch remote {remote.name!r} ({_shown(remote.url)}) to check that commit "
            f"{commit[:12]} is pushed: {fetched.stderr.strip() or 'git fetch failed'}; check the "
            f"network and your access, or preview with --dry-run"
        )
    branches = _git(repo_dir, "for-each-ref", "--contains", commit, "--format=%(refname:short)",
                    f"refs/remotes/{remote.name}/").stdout.split()
    if not branches:
        branch = _git(repo_dir, "symbolic-ref", "--quiet", "--short", "HEAD").stdout.strip()
        push = f"git push {remote.name} {branch}" if branch else f"git push {remote.name} HEAD:<branch>"
        raise GitCheckError(
            f"commit {commit[:12]} is not on any branch of remote {remote.name!r} ({_shown(remote.url)}), so "
            f"the pods could not check it out; push it first: {push}"
        )
    return remote

