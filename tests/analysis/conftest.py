"""Fixtures of the status and analysis tests.

* ``synthetic`` / ``synthetic_results``: a campaign whose CV series are drawn
  exactly from a known double-well PMF (see :mod:`tests.analysis.synthetic`),
  read-only and as a private copy.
* ``s3_server``: moto's S3 server on loopback, started and stopped here, with
  the standard AWS variables pointing at it.
* ``fake_kubectl``: a ``kubectl`` stand-in first on PATH that answers the one
  query status makes with a recorded JSON file, and refuses anything else.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from .synthetic import write_synthetic_campaign

DATA_DIR = Path(__file__).resolve().parent / "data"

#: The cheap deterministic estimator, for tests about something else than the default
#: (the KDE with 100 bootstrap resamples, the command's and the API's alike).
CHEAP = dict(method="histogram", n_bootstraps=0)


@pytest.fixture(autouse=True)
def _quiet_pymbar():
    # The no-JAX banner and timeseries caveat would bury the assertion output.
    logging.getLogger("pymbar").setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _cheap_command_defaults(monkeypatch):
    """The command's estimator as the library's (histogram, analytical errors) unless a test says.

    The command's own defaults (KDE, 100 bootstrap resamples) cost seconds per
    run; the tests that exercise them unset these variables.
    """
    monkeypatch.setenv("PROTBENCH_PMF_METHOD", "histogram")
    monkeypatch.setenv("PROTBENCH_BOOTSTRAP", "0")


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """Read-only: 3 replicas x 16 windows x 2000 frames of a double well (g ~ 9)."""
    return write_synthetic_campaign(tmp_path_factory.mktemp("synthetic") / "results")


@pytest.fixture
def synthetic_results(synthetic, tmp_path):
    """A writable copy of ``synthetic``."""
    root = tmp_path / "results"
    shutil.copytree(synthetic.root, root)
    return replace(synthetic, root=root)


@pytest.fixture
def s3_server(monkeypatch, tmp_path):
    """An empty S3 endpoint on 127.0.0.1; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for name, value in (("AWS_ACCESS_KEY_ID", "protbench-test"),
                        ("AWS_SECRET_ACCESS_KEY", "protbench-test-secret"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", url),
                        ("NO_PROXY", "127.0.0.1"), ("no_proxy", "127.0.0.1"),
                        # No rclone config: the credentials above are the ones used.
                        ("RCLONE_CONFIG", str(tmp_path / "no-rclone.conf"))):
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY",
                 "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield url
    finally:
        server.stop()


def upload_tree(client, bucket: str, root: Path, prefix: str = "results") -> list[str]:
    """Upload every file under ``root`` as ``prefix/<relative path>``; return the keys."""
    keys = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(root).as_posix()}"
        client.upload_file(str(path), bucket, key)
        keys.append(key)
    return keys


FAKE_KUBECTL = """#!/bin/sh
# kubectl stand-in: answers `get jobs,pods -l SELECTOR -o json` with a recorded List.
printf '%s\\n' "$*" >> '{calls}'
if [ -n "${{FAKE_KUBECTL_ERROR:-}}" ]; then
  echo "$FAKE_KUBECTL_ERROR" >&2
  exit 1
fi
if [ "$1 $2 $3" = "get jobs,pods -l" ] && [ "$4" = '{selector}' ] && [ "$5 $6" = "-o json" ]; then
  cat '{answer}'
  exit 0
fi
echo "kubectl stand-in: unexpected call: $*" >&2
exit 2
"""


@pytest.fixture
def fake_kubectl(tmp_path, monkeypatch):
    """Install a kubectl stand-in; call it with (selector, answer JSON path); returns the calls log."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    calls = tmp_path / "kubectl-calls"

    def install(selector: str, answer: Path) -> Path:
        script = bin_dir / "kubectl"
        script.write_text(FAKE_KUBECTL.format(calls=calls, selector=selector, answer=answer))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
        return calls

    return install
