"""A launcher in a real temporary git repository, with a real bare remote and a kubectl stand-in.

:class:`LauncherRepo` copies the real ``run-umbrella-windows.py``, the real
template and the real ``umbrella-scripts`` package into a fresh repository,
pushes it to a bare repository that plays the role of GitHub, and runs the
launcher as a scientist would: edit the constants, run the script. The only
stand-in is ``kubectl``: a script first on PATH that keeps a cluster of Jobs
with their states (see :data:`FAKE_KUBECTL`), records each call and a copy of
each file it was given, and fails (or sends the launcher a Ctrl-C) on request. The launcher runs
with an empty HOME and RCLONE_CONFIG
pointing into the test's directory, so nothing of this machine's setup
reaches it. IMAGE names an image of a registry on loopback that speaks the
real protocol (tests/registry.py) and PROTEINBENCHMARK_REPO a local bare
repository, so a launch pins both without the internet.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = "run-umbrella-windows.py"
TEMPLATE = "k8s_template.yaml"

from protbench_nrp.jobs import STAGE_SCRIPTS  # noqa: E402  (umbrella-scripts is on pytest's pythonpath)

from tests.registry import Registry  # noqa: E402

#: The image the test launcher's IMAGE names, in the loopback registry.
IMAGE_NAME = "openforcefield/proteinbenchmark-nrp"

WINDOW_SCRIPT = "umbrella-scripts/run-umbrella-window.py"

FAKE_KUBECTL = """#!{python}
# kubectl stand-in: a cluster of Jobs kept in {log}/cluster.json, as the real
# API server keeps them. `create` adds a Job (AlreadyExists when one of that
# name exists), `apply` says unchanged/configured for an existing one (and
# refuses a changed pod template: immutable), `delete job` removes one
# (NotFound when absent; fails or times out on request), `get jobs[,pods] -l`
# lists Jobs with the status a real cluster reports for their state (active,
# complete, failed, suspended) and an active Job's running pod. Every call is
# recorded, with a copy of each file given to -f.
import json, os, signal, sys

log = {log!r}
args = sys.argv[1:]
count_file = os.path.join(log, "count")
n = int(open(count_file).read()) + 1 if os.path.exists(count_file) else 1
open(count_file, "w").write(str(n))
with open(os.path.join(log, "calls"), "a") as calls:
    calls.write(" ".join(args) + "\\n")
state_file = os.path.join(log, "cluster.json")
cluster = json.load(open(state_file)) if os.path.exists(state_file) else {{}}


def save():
    with open(state_file + ".new", "w") as handle:
        json.dump(cluster, handle)  # compact: a 93-Job cluster is rewritten on every call
    os.replace(state_file + ".new", state_file)


def fail(message, code=1):
    print(message, file=sys.stderr)
    sys.exit(code)


if args[:1] in (["create"], ["apply"]) and args[1:2] == ["-f"]:
    with open(args[2], "rb") as source, open(os.path.join(log, f"applied-{{n}}.yaml"), "wb") as copy:
        copy.write(source.read())
    with open(os.path.join(log, "applied-paths"), "a") as paths:
        paths.write(args[2] + "\\n")
if str(n) == os.environ.get("FAKE_KUBECTL_INTERRUPT_AT"):
    os.kill(os.getppid(), signal.SIGINT)  # Ctrl-C reaches the launcher (and, as in a terminal, this kubectl dies of it)
    sys.exit(130)
if str(n) == os.environ.get("FAKE_KUBECTL_FAIL_AT"):
    fail("error: You must be logged in to the server (Unauthorized)")


def job_items(selector):
    wanted = dict(term.split("=", 1) for term in selector.split(",")) if selector else {{}}
    items = []
    for name, job in sorted(cluster.items()):
        labels = job.get("labels", {{}})
        if any(labels.get(key) != value for key, value in wanted.items()):
            continue
        status, spec = {{}}, {{}}
        if job["state"] == "active":
            status = {{"active": 1, "ready": 1}}
        elif job["state"] == "suspended":
            spec = {{"suspend": True}}
            status = {{"conditions": [{{"type": "Suspended", "status": "True"}}]}}
        elif job["state"] == "complete":
            status = {{"succeeded": 1, "conditions": [{{"type": "SuccessCriteriaMet", "status": "True"}},
                                                       {{"type": "Complete", "status": "True"}}]}}
        elif job["state"] == "failed":
            condition = {{"type": "Failed", "status": "True", "reason": job.get("reason", "BackoffLimitExceeded"),
                          "message": job.get("message", "Job has reached the specified backoff limit")}}
            status = {{"failed": job.get("failed", 1), "conditions": [
                {{**condition, "type": "FailureTarget"}}, condition]}}
        items.append({{"apiVersion": "batch/v1", "kind": "Job",
                       "metadata": {{"name": name, "labels": labels}}, "spec": spec, "status": status}})
        for pod in job.get("pods", []) or ([{{"phase": "Running"}}] if job["state"] == "active" else []):
            items.append({{"apiVersion": "v1", "kind": "Pod", "metadata": {{
                "name": f"{{name}}-{{pod.get('suffix', 'abcde')}}", "labels": {{"batch.kubernetes.io/job-name": name}},
                "ownerReferences": [{{"kind": "Job", "name": name}}],
                **({{"deletionTimestamp": pod["deletionTimestamp"]}} if "deletionTimestamp" in pod else {{}}),
                **({{"deletionGracePeriodSeconds": pod["grace"]}} if "grace" in pod else {{}})}},
                "spec": {{"nodeName": pod.get("node", "node-1"), "terminationGracePeriodSeconds": 600}},
                "status": {{"phase": pod.get("phase", "Running"), "containerStatuses": [
                    {{"name": "main", "restartCount": 0, "state": {{"running": {{}}}}}}]}}}})
    return items


verb = args[0] if args else ""
if verb in ("create", "apply"):
    import yaml  # here, not above: only these calls read YAML, and every call starts a Python

    # libyaml's loader when PyYAML has it: the pure-Python one costs a launch of 93 Jobs seconds
    manifest = yaml.load(open(args[2]), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    name = manifest["metadata"]["name"]
    if verb == "create":
        if name in cluster:
            fail(f'Error from server (AlreadyExists): error when creating "{{args[2]}}": '
                 f'jobs.batch "{{name}}" already exists')
    elif name in cluster:
        old = cluster[name]["manifest"]
        if old == manifest:
            print(f"job.batch/{{name}} unchanged")
            sys.exit(0)
        if old["spec"]["template"] != manifest["spec"]["template"]:
            fail(f'The Job "{{name}}" is invalid: spec.template: Invalid value: ...: field is immutable')
        cluster[name]["manifest"] = manifest
        save()
        print(f"job.batch/{{name}} configured")
        sys.exit(0)
    cluster[name] = {{"state": "active", "labels": manifest["metadata"].get("labels", {{}}), "manifest": manifest}}
    save()
    print(f"job.batch/{{name}} created")
elif verb == "delete" and args[1:2] == ["job"]:
    name = args[2]
    if name not in cluster:
        fail(f'Error from server (NotFound): jobs.batch "{{name}}" not found')
    mode = os.environ.get("FAKE_KUBECTL_DELETE", "")
    if mode == "fail":
        fail(f'Error from server (Forbidden): jobs.batch "{{name}}" is forbidden: '
             f'User "tst" cannot delete resource "jobs"')
    if mode == "timeout":
        fail(f"error: timed out waiting for the condition on jobs/{{name}}")
    del cluster[name]
    save()
    print(f'job.batch "{{name}}" deleted')
elif verb == "get" and args[1:2] in (["jobs"], ["jobs,pods"]):
    selector = args[args.index("-l") + 1] if "-l" in args else ""
    items = [item for item in job_items(selector) if args[1] == "jobs,pods" or item["kind"] == "Job"]
    print(json.dumps({{"apiVersion": "v1", "kind": "List", "items": items}}))
else:
    fail(f"kubectl stand-in: unsupported call: {{' '.join(args)}}", 2)
"""


def git(cwd: Path, *args: str) -> str:
    """Run git, failing the test on error; return its output."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"git {' '.join(args)} failed: {result.stderr}"
    return result.stdout.strip()


@dataclass(frozen=True)
class LauncherTemplate:
    """A launcher repository committed and pushed once per session, for each test to copy.

    Building one costs a dozen git calls, most of a test's set-up; copying the
    tree and amending its one commit with the test's own paths costs three.
    """

    root: Path
    proteinbenchmark_commit: str

    @classmethod
    def build(cls, root: Path) -> LauncherTemplate:
        repo = LauncherRepo(root)
        repo.registry.stop()
        for per_test in (repo.bin, repo.home, repo.log):  # each copy writes its own kubectl, naming its own log
            shutil.rmtree(per_test)
        # every copy pays per file: pack the objects, drop git's inert sample hooks and proteinbenchmark's work tree
        for repository in (repo.dir, repo.remote):
            git(repository, "repack", "-a", "-d", "-q")
            git(repository, "prune")
        for sample in root.glob("**/hooks/*.sample"):
            sample.unlink()
        shutil.rmtree(root / "proteinbenchmark-work")
        return cls(root, repo.proteinbenchmark_commit)


class LauncherRepo:
    """A clone of the launcher's files in a git repository whose origin is a local bare repository."""

    def __init__(self, root: Path, registry: Registry | None = None, template: LauncherTemplate | None = None):
        self.root = root
        self.registry = registry or Registry().start()
        self.image_digest = self.registry.push(IMAGE_NAME, "latest")
        self.image = f"{self.registry.host}/{IMAGE_NAME}:latest"
        self.proteinbenchmark = root / "proteinbenchmark.git"  # PROTEINBENCHMARK_REPO
        self.dir = root / "work"
        self.remote = root / "remote.git"
        self.log = root / "kubectl-log"
        self.bin = root / "bin"
        self.home = root / "home"  # an empty HOME: no rclone, AWS or git config of this machine
        self.rclone_config = root / "rclone" / "rclone.conf"  # RCLONE_CONFIG; absent unless a test writes it
        if template is None:
            self._populate()
        else:  # the session's repositories, copied: this test's own, to commit to, push to or break
            shutil.copytree(template.root, root, symlinks=True, dirs_exist_ok=True)
            self.proteinbenchmark_commit = template.proteinbenchmark_commit
            self._repoint()
        self._install_kubectl()

    # -- set-up ----------------------------------------------------------------------
    def _populate(self) -> None:
        self.dir.mkdir()
        shutil.copy2(REPO_ROOT / LAUNCHER, self.dir / LAUNCHER)
        shutil.copy2(REPO_ROOT / TEMPLATE, self.dir / TEMPLATE)
        shutil.copy2(REPO_ROOT / ".gitignore", self.dir / ".gitignore")
        shutil.copytree(REPO_ROOT / "umbrella-scripts", self.dir / "umbrella-scripts",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for script in [WINDOW_SCRIPT, *STAGE_SCRIPTS.values()]:
            path = self.dir / script
            if not path.exists():  # written by other parts of the project; only their git state matters here
                path.write_text("#!/usr/bin/env python3\nprint('simulation')\n")
                path.chmod(0o755)
        git(self.root, "init", "--quiet", "--bare", str(self.remote))
        git(self.dir, "init", "--quiet", "-b", "main")
        git(self.dir, "remote", "add", "origin", str(self.remote))
        self.proteinbenchmark_commit = self._make_proteinbenchmark()
        self.set_constants(REPO_URL=str(self.remote), INITIALS="tst", IMAGE=self.image,
                           PROTEINBENCHMARK_REPO=str(self.proteinbenchmark))
        self.commit("initial")
        git(self.dir, "push", "--quiet", "-u", "origin", "main")

    def _repoint(self) -> None:
        """Make a copy of a template name this test's paths and registry, as if populated here.

        origin's URL and the constants naming a path (REPO_URL,
        PROTEINBENCHMARK_REPO) or the registry (IMAGE) are the only places the
        template's root or port appear. The one commit is amended with them
        and force-pushed: the history stays the single commit "initial", on
        the remote too, and only the new launcher blob, tree and commit travel.
        """
        git(self.dir, "remote", "set-url", "origin", str(self.remote))
        self.set_constants(REPO_URL=str(self.remote), IMAGE=self.image,
                           PROTEINBENCHMARK_REPO=str(self.proteinbenchmark))
        git(self.dir, "commit", "--quiet", "--amend", "-a", "-m", "initial")
        git(self.dir, "push", "--quiet", "--force", "origin", "main")

    def _make_proteinbenchmark(self) -> str:
        """A bare repository standing for proteinbenchmark's, with a branch main; its commit."""
        work = self.root / "proteinbenchmark-work"
        work.mkdir()
        git(work, "init", "--quiet", "-b", "main")
        git(work, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "--quiet",
            "--allow-empty", "-m", "proteinbenchmark")
        git(self.root, "clone", "--quiet", "--bare", str(work), str(self.proteinbenchmark))
        return git(work, "rev-parse", "HEAD")

    def _install_kubectl(self) -> None:
        self.home.mkdir()
        self.log.mkdir()
        self.bin.mkdir()
        kubectl = self.bin / "kubectl"
        kubectl.write_text(FAKE_KUBECTL.format(log=str(self.log), python=sys.executable))
        kubectl.chmod(0o755)

    # -- editing, as a scientist would -----------------------------------------------
    def set_constants(self, **values) -> None:
        """Rewrite ``NAME = ...`` lines of the launcher's constants."""
        path = self.dir / LAUNCHER
        text = path.read_text()
        for name, value in values.items():
            text, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", text, flags=re.M)
            assert count == 1, f"constant {name} not found once in {LAUNCHER}"
        path.write_text(text)

    def commit(self, message: str) -> str:
        git(self.dir, "add", "-A")
        git(self.dir, "commit", "--quiet", "-m", message)
        return self.head()

    def head(self) -> str:
        return git(self.dir, "rev-parse", "HEAD")

    # -- running ------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """This machine's environment without what would reach its buckets or change Python's writes.

        Preflight reads credentials from ``$RCLONE_CONFIG``, else HOME's rclone
        config, else ``AWS_*``; boto3 also reads HOME's ``~/.aws``. The tests
        point RCLONE_CONFIG at a file of their own and give an empty HOME, so a
        developer's real bucket is never reached and results do not depend on
        the machine; without KUBECONFIG, the namespace a launch names is read
        from HOME's ``.kube/config`` (none unless a test writes it).
        """
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(("AWS_", "RCLONE_", "XDG_", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX",
                                       "KUBECONFIG"))}
        env["HOME"] = str(self.home)
        env["RCLONE_CONFIG"] = str(self.rclone_config)
        return env

    def run(self, *args: str, fail_at: int | None = None, interrupt_at: int | None = None,
            path_kubectl: bool = True, skip_preflight: bool = True, delete: str | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run the real launcher script; ``--skip-preflight`` unless told otherwise."""
        env = self.environment()
        if path_kubectl:
            env["PATH"] = f"{self.bin}{os.pathsep}{env['PATH']}"
        else:  # a PATH holding git and nothing else, so no kubectl of this machine is found either
            bare = self.root / "bin-without-kubectl"
            bare.mkdir(exist_ok=True)
            if not (bare / "git").exists():
                (bare / "git").symlink_to(shutil.which("git"))
            env["PATH"] = str(bare)
        if fail_at is not None:
            env["FAKE_KUBECTL_FAIL_AT"] = str(fail_at)
        if interrupt_at is not None:
            env["FAKE_KUBECTL_INTERRUPT_AT"] = str(interrupt_at)
        if delete is not None:  # "fail" or "timeout": what kubectl delete job does
            env["FAKE_KUBECTL_DELETE"] = delete
        argv = [sys.executable, str(self.dir / LAUNCHER), *args]
        if skip_preflight and "--dry-run" not in args:
            argv.append("--skip-preflight")
        return subprocess.run(argv, cwd=cwd or self.dir, env=env, capture_output=True, text=True, timeout=300)

    # -- what happened ---------------------------------------------------------------------
    def kubectl_calls(self) -> list[str]:
        calls = self.log / "calls"
        return calls.read_text().splitlines() if calls.exists() else []

    def cluster(self) -> dict[str, dict]:
        """The stand-in cluster's Jobs by name: ``state`` (active, complete, failed, suspended) and more."""
        path = self.log / "cluster.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def cluster_states(self) -> dict[str, str]:
        return {name: job["state"] for name, job in self.cluster().items()}

    def set_job(self, name: str, state: str | None, **details) -> None:
        """What the cluster did meanwhile: a Job becomes ``state`` (None: gone, e.g. its TTL passed)."""
        jobs = self.cluster()
        if state is None:
            jobs.pop(name)
        else:
            jobs.setdefault(name, {"labels": {}, "manifest": {}}).update(state=state, **details)
        (self.log / "cluster.json").write_text(json.dumps(jobs))

    def applied(self) -> list[tuple[Path, bytes]]:
        """(path given to kubectl, bytes kubectl read) for every create/apply call, in order."""
        paths_file = self.log / "applied-paths"
        paths = paths_file.read_text().splitlines() if paths_file.exists() else []
        return [(Path(p), (self.log / f"applied-{n}.yaml").read_bytes()) for n, p in enumerate(paths, start=1)]

    @property
    def results(self) -> Path:
        return self.dir / "results"

    def result_files(self) -> list[Path]:
        return sorted(p for p in self.results.rglob("*") if p.is_file()) if self.results.exists() else []

    def snapshot(self) -> dict[str, bytes]:
        """Every file of the work tree (git's own database aside, ``__pycache__`` included)."""
        return {str(p.relative_to(self.dir)): p.read_bytes() for p in sorted(self.dir.rglob("*"))
                if p.is_file() and ".git" not in p.relative_to(self.dir).parts}


@pytest.fixture(scope="session")
def launcher_template(tmp_path_factory) -> LauncherTemplate:
    return LauncherTemplate.build(tmp_path_factory.mktemp("launcher-template"))


@pytest.fixture
def launcher_repo(tmp_path, launcher_template) -> LauncherRepo:
    repo = LauncherRepo(tmp_path, template=launcher_template)
    yield repo
    repo.registry.stop()


def assert_refused_untouched(repo, result, *needles: str) -> None:
    """Refused with every needle in the message, and nothing written or applied."""
    assert result.returncode == 1, result.stdout + result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in:\n{result.stderr}"
    assert "Nothing was applied" in result.stderr
    assert repo.kubectl_calls() == []
    assert not repo.results.exists()


def documents(stream: str) -> list[dict]:
    """The documents of a YAML stream."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(stream, Loader=loader) if doc is not None]


def all_containers(manifest: dict) -> list[dict]:
    pod = manifest["spec"]["template"]["spec"]
    return list(pod.get("initContainers") or []) + list(pod["containers"])


def env_of(container: dict) -> dict[str, str]:
    # Downward API entries (valueFrom) have their value only in the pod.
    return {entry["name"]: entry["value"] for entry in container.get("env") or [] if "value" in entry}
