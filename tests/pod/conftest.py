"""Fixtures of the pod data-flow tests: a real S3 server, buckets, and pods without Kubernetes.

rclone really copies to and from a moto S3 server on 127.0.0.1; see
:mod:`tests.pod.harness` for how a rendered Job runs here.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.pod.harness import REMOTE, Pod, render_job
from tests.pod.s3server import Bucket, MotoServer


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """One moto S3 server for the session (tests use their own buckets)."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto_server.log").start()
    yield server
    server.stop()


_bucket_numbers = itertools.count(1)


@pytest.fixture
def bucket(s3) -> Bucket:
    """A new, empty, versioned bucket."""
    return Bucket(s3, f"pod-test-{os.getpid()}-{next(_bucket_numbers)}").create()


@pytest.fixture
def make_pod(s3, bucket, tmp_path):
    """Build a :class:`Pod` for a stage of the villin campaign, its config pointing at ``bucket``."""

    def build(stage: str = "window", replica: int = 1, window: int = 0, *, name: str = "pod",
              repo: Path | None = None, bucket_name: str | None = None,
              secret_access_key: str | None = None, endpoint: str | None = None) -> Pod:
        base = tmp_path / name
        home = base / "home"
        home.mkdir(parents=True)
        manifest, job = render_job(bucket_name or bucket.name, stage, replica, window)
        config = s3.rclone_config(base / "secrets" / "rclone.conf", REMOTE,
                                  secret_access_key=secret_access_key, endpoint=endpoint)
        return Pod(manifest, job, base / "results", repo or REPO_ROOT, config, home)

    return build


@pytest.fixture
def shared_dir():
    """A directory other users can enter, as the pod's mounts are (pytest's tmp_path is owner-only)."""
    path = Path(tempfile.mkdtemp(prefix="protbench-pod-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)
