"""A real S3 server on loopback for the pod tests and the upload benchmark.

:class:`MotoServer` runs moto's server (what ``moto_server`` runs) in a process
of its own, on a port of 127.0.0.1 that the OS chose when the server bound it,
with signature checking switched on, so a wrong secret key is refused exactly
as a real endpoint refuses it. rclone and boto3 both talk to it over HTTP.

:class:`Bucket` seeds and inspects one versioned bucket: every upload leaves a
version, so the bytes a pod sent are the sizes of all versions of its keys,
measured by the server rather than reported by the scripts.

Run as a script, this file is that server process: it binds port 0, prints the
port it got, and serves until SIGTERM.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# moto answers the first requests without checking signatures; the fixture
# spends exactly these on creating the test user, its policy and its key.
_UNAUTHENTICATED_SETUP_CALLS = 3
_REGION = "us-east-1"


def _serve() -> None:
    """The server process: moto's application on 127.0.0.1, port 0; prints the port, serves until SIGTERM."""
    import signal

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    # As moto_server does (moto/server.py), but bound to a port of the OS's choice: one chosen
    # beforehand could be taken by the time the server binds it.
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True,
                         request_handler=MotoRequestHandler)
    port = server.server_address[1]
    os.environ["MOTO_PORT"] = str(port)  # moto_server's setting for services that name their own URL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(port, flush=True)  # the socket listens already: connections wait in its backlog
    os.dup2(2, 1)  # anything printed later goes to the log; nobody reads the pipe any more
    server.serve_forever()


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

    def start(self, timeout_s: float = 120.0) -> "MotoServer":
        # This interpreter's moto: another on PATH (pyenv's, say) may check signatures differently.
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_UNAUTHENTICATED_SETUP_CALLS)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, stderr=log,
                                            env=env)
        try:
            self.endpoint = f"http://127.0.0.1:{self._port(timeout_s)}"
            self._create_user()
        except BaseException:
            self.stop()
            raise
        return self

    def _port(self, timeout_s: float) -> int:
        """The port the server process bound, as it printed it once listening."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout_s)
        line = self.process.stdout.readline() if ready else b""
        self.process.stdout.close()
        if not line.strip().isdigit():
            state = ("it is still starting" if self.process.poll() is None
                     else f"it exited with status {self.process.returncode}")
            raise RuntimeError(f"moto's server gave no port within {timeout_s:g} s ({state}); see {self.log_path}"
                               f" (is moto installed in {sys.executable}? make venv installs it)")
        return int(line)

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
        # Written whole, then renamed into place: tests swap the endpoint while a pod's rclone may be reading.
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(
            f"[{remote}]\n"
            "type = s3\n"
            "provider = Other\n"
            f"access_key_id = {self.access_key_id}\n"
            f"secret_access_key = {secret_access_key or self.secret_access_key}\n"
            f"endpoint = {endpoint or self.endpoint}\n"
            f"region = {_REGION}\n"
            "force_path_style = true\n"
        )
        os.replace(partial, path)
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


if __name__ == "__main__":
    _serve()
