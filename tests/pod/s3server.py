"""A real S3 server on loopback for the pod tests and the upload benchmark.

:class:`MotoServer` runs ``moto_server`` (moto's stand-alone server mode) on a
free port of 127.0.0.1 with signature checking switched on, so a wrong secret
key is refused exactly as a real endpoint refuses it. rclone and boto3 both
talk to it over HTTP.

:class:`Bucket` seeds and inspects one versioned bucket: every upload leaves a
version, so the bytes a pod sent are the sizes of all versions of its keys,
measured by the server rather than reported by the scripts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# moto answers the first requests without checking signatures; the fixture
# spends exactly these on creating the test user, its policy and its key.
_UNAUTHENTICATED_SETUP_CALLS = 3
_REGION = "us-east-1"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    # A bare TCP connect: an HTTP probe would use up one of the unauthenticated calls.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {process.returncode} before answering")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto_server did not answer on port {port} within {timeout_s} s")


class MotoServer:
    """``moto_server`` on a random loopback port, with one IAM user allowed everything.

    Attributes
    ----------
    endpoint : str
    access_key_id, secret_access_key : str
        The user's real key pair; requests signed otherwise are refused.
    """

    def __init__(self, log_path: Path):
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None
        self.endpoint = ""
        self.access_key_id = ""
        self.secret_access_key = ""

    def start(self, timeout_s: float = 60.0) -> "MotoServer":
        # The venv's own server first: another moto on PATH (pyenv's, say) may check signatures differently.
        beside = Path(sys.executable).parent / "moto_server"
        binary = str(beside) if beside.exists() else shutil.which("moto_server")
        if binary is None:
            raise RuntimeError("moto_server is not on PATH; run the tests with .venv/bin on PATH (make test)")
        port = free_port()
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_UNAUTHENTICATED_SETUP_CALLS)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                                            stdout=log, stderr=subprocess.STDOUT, env=env)
        self.endpoint = f"http://127.0.0.1:{port}"
        try:
            _wait_for_port(port, self.process, timeout_s)
            self._create_user()
        except BaseException:
            self.stop()
            raise
        return self

    def _create_user(self) -> None:
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name=_REGION,
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="pod")
        iam.put_user_policy(UserName="pod", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="pod")["AccessKey"]
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self, secret_access_key: str | None = None):
        """A boto3 S3 client signed with the user's key (or another secret)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=_REGION,
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=secret_access_key or self.secret_access_key,
                            config=Config(s3={"addressing_style": "path"}))

    def rclone_config(self, path: Path, remote: str, *, secret_access_key: str | None = None,
                      endpoint: str | None = None) -> Path:
        """Write an rclone config whose ``[remote]`` reaches this server (as NRP's secret does)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"[{remote}]\n"
            "type = s3\n"
            "provider = Other\n"
            f"access_key_id = {self.access_key_id}\n"
            f"secret_access_key = {secret_access_key or self.secret_access_key}\n"
            f"endpoint = {endpoint or self.endpoint}\n"
            f"region = {_REGION}\n"
            "force_path_style = true\n"
        )
        return path


@dataclass
class ObjectVersion:
    key: str
    size: int
    latest: bool
    version_id: str


class Bucket:
    """One versioned bucket of the server, seen through boto3.

    Parameters
    ----------
    server : MotoServer
    name : str
    """

    def __init__(self, server: MotoServer, name: str):
        self.server, self.name = server, name
        self.client = server.client()

    def create(self) -> "Bucket":
        self.client.create_bucket(Bucket=self.name)
        self.client.put_bucket_versioning(Bucket=self.name,
                                          VersioningConfiguration={"Status": "Enabled"})
        return self

    def put_tree(self, root: Path, relative: str = "") -> list[str]:
        """Upload every file under ``root/relative`` to ``results/...``; return the keys."""
        keys = []
        base = Path(root)
        start = base / relative if relative else base
        files = [start] if start.is_file() else sorted(p for p in start.rglob("*") if p.is_file())
        for path in files:
            key = f"results/{path.relative_to(base).as_posix()}"
            self.client.upload_file(str(path), self.name, key)
            keys.append(key)
        return keys

    def versions(self, prefix: str = "results/") -> list[ObjectVersion]:
        found = []
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Versions", []):
                found.append(ObjectVersion(item["Key"], item["Size"], item["IsLatest"], item["VersionId"]))
        return found

    def latest(self, prefix: str = "results/") -> dict[str, int]:
        """Key -> size of the current version of every object under ``prefix``."""
        return {v.key: v.size for v in self.versions(prefix) if v.latest}

    def version_counts(self, prefix: str = "results/") -> dict[str, int]:
        counts: dict[str, int] = {}
        for version in self.versions(prefix):
            counts[version.key] = counts.get(version.key, 0) + 1
        return counts

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def rclone_mtime(self, key: str) -> float | None:
        """The modification time rclone stored with an object (seconds since the epoch)."""
        metadata = self.client.head_object(Bucket=self.name, Key=key).get("Metadata", {})
        return float(metadata["mtime"]) if "mtime" in metadata else None

    def download_tree(self, prefix: str, destination: Path) -> None:
        """Copy every current object under ``results/prefix`` to ``destination/prefix``."""
        for key in self.latest(f"results/{prefix}"):
            target = Path(destination) / key[len("results/"):]
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.name, key, str(target))
