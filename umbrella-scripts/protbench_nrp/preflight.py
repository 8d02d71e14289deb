"""Preflight: before any Job is applied, check the bucket holds what the Jobs read.

A window Job whose inputs are not in the bucket starts, finds nothing, and
fails after minutes of scheduling, image pulling and cloning, 93 times over.
:func:`preflight` asks the bucket first and refuses the launch with the list
of what is missing and the stage that writes it:

* setup Jobs read nothing;
* steered-MD Jobs read ``S/setup/`` (must hold at least one file);
* window Jobs read ``S/setup/``, their replica's steered state and their
  window's starting structure.

Credentials come from the same place rclone takes them: the section
``[RCLONE_REMOTE]`` of the rclone config (``$RCLONE_CONFIG``, else
``~/.config/rclone/rclone.conf``, downloaded as the README says). Without
that file or section, the standard ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL`` variables are used. Every
failure (no credentials, unreachable endpoint, rejected keys, missing bucket)
is a :class:`PreflightError` whose message names the cause and the fix, and
never contains a key.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping

from .errors import ProtbenchError
from .jobs import STAGE_SCRIPTS, CampaignConfig, JobSpec
from .layout import BUCKET_PREFIX, Campaign

#: Everything of a campaign lives under this prefix of the bucket.

#: Bounded network behaviour: an unreachable endpoint fails in seconds, not minutes.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
MAX_ATTEMPTS = 2

_ENCRYPTED_MARKER = "RCLONE_ENCRYPT_V0:"


class PreflightError(ProtbenchError, RuntimeError):
    """The bucket cannot be checked, or lacks inputs of the Jobs; nothing was applied.

    Attributes
    ----------
    missing : list of MissingInput
        The inputs found missing (empty when the check itself failed).
    """

    def __init__(self, message: str, missing: Iterable["MissingInput"] = ()):
        super().__init__(message)
        self.missing = list(missing)


@dataclass(frozen=True)
class MissingInput:
    """One input absent from the bucket, and who writes it.

    Attributes
    ----------
    path : str
        Path below ``results/`` (directories end in ``/``).
    stage : str
        The stage whose Job writes it (``"setup"`` or ``"steered"``).
    replica : int or None
        The steered-MD replica that writes it.
    """

    path: str
    stage: str
    replica: int | None = None

    def describe(self) -> str:
        script = STAGE_SCRIPTS[self.stage]
        if self.stage == "setup":
            what = "is missing or empty" if self.path.endswith("/") else "is missing"
            return (f"{self.path} {what}: written by the setup stage ({script}); "
                    f"launch STAGE = 'setup' first")
        return (f"{self.path} is missing: written by steered MD of replica {self.replica} ({script}); "
                f"launch STAGE = 'steered' with REPLICAS = ({self.replica},) first")


# -- credentials -----------------------------------------------------------------------

@dataclass(frozen=True)
class S3Access:
    """How to reach the bucket; ``source`` says where the values came from (no secrets)."""

    endpoint_url: str | None
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    region: str
    source: str
    session_token: str | None = field(default=None, repr=False)

    def client(self):
        """A boto3 S3 client with short timeouts and few retries."""
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                        s3={"addressing_style": "path"})
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token, config=config)


def rclone_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The rclone config rclone itself would read: ``$RCLONE_CONFIG``, else the default place."""
    environ = os.environ if environ is None else environ
    if environ.get("RCLONE_CONFIG"):
        return Path(environ["RCLONE_CONFIG"]).expanduser()
    home = Path(environ.get("HOME") or Path.home())
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "rclone" / "rclone.conf"


def read_rclone_remote(path: Path, remote: str) -> dict[str, str] | None:
    """The ``key = value`` pairs of section ``[remote]`` of an rclone config, or ``None``.

    Raises
    ------
    PreflightError
        When the file is encrypted or not an rclone config.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise PreflightError(f"cannot read the rclone config {path}: {error.strerror}") from None
    if _ENCRYPTED_MARKER in text:
        raise PreflightError(
            f"the rclone config {path} is encrypted, which preflight cannot read; set "
            f"AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL instead, or launch "
            f"with --skip-preflight")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as error:
        raise PreflightError(f"{path} is not an rclone config ({_first_line(error)}); "
                             f"download it again (README: Accessing results)") from None
    if not parser.has_section(remote):
        return None
    return {key: value.strip().strip("'\"") for key, value in parser.items(remote)}


def s3_access(remote: str, environ: Mapping[str, str] | None = None) -> S3Access:
    """Credentials and endpoint for ``remote``: its rclone config section, else the AWS variables.

    Raises
    ------
    PreflightError
        When neither source provides a key pair, or the remote is not S3.
    """
    environ = os.environ if environ is None else environ
    path = rclone_config_path(environ)
    section = read_rclone_remote(path, remote)
    if section is not None:
        if section.get("type", "s3") != "s3":
            raise PreflightError(f"remote '{remote}' in {path} is of type '{section['type']}', not "
                                 f"s3; set RCLONE_REMOTE to the S3 remote of the bucket")
        key, secret = section.get("access_key_id", ""), section.get("secret_access_key", "")
        if key and secret:
            return S3Access(_endpoint(section.get("endpoint")) or _env_endpoint(environ), key, secret,
                            section.get("region") or environ.get("AWS_REGION")
                            or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                            f"rclone remote '{remote}' in {path}", section.get("session_token") or None)
    key, secret = environ.get("AWS_ACCESS_KEY_ID", ""), environ.get("AWS_SECRET_ACCESS_KEY", "")
    if key and secret:
        endpoint = _env_endpoint(environ) or (_endpoint(section.get("endpoint")) if section else None)
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return S3Access(endpoint, key, secret, region, "the AWS_* environment variables",
                        environ.get("AWS_SESSION_TOKEN") or None)
    where = (f"remote '{remote}' in {path} has no access_key_id/secret_access_key"
             if section is not None else f"{path} has no remote '{remote}'")
    raise PreflightError(
        f"no credentials for the bucket: {where}, and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are "
        f"not set. Download the rclone config (README: Accessing results) or set RCLONE_CONFIG "
        f"to it, or launch with --skip-preflight")


def _endpoint(value: str | None) -> str | None:
    # rclone accepts a bare host name; boto3 needs a URL
    if not value:
        return None
    return value if "://" in value else f"https://{value}"


def _env_endpoint(environ: Mapping[str, str]) -> str | None:
    return _endpoint(environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL"))


# -- what each Job needs -------------------------------------------------------------------

def required_inputs(job: JobSpec, campaign: Campaign) -> list[MissingInput]:
    """The inputs a Job reads that an earlier stage writes (as candidates for "missing")."""
    return [MissingInput(path, producer, None if producer == "setup" else job.replica)
            for path, producer in campaign.stage_inputs(job.stage, job.replica, job.window)]


class _Bucket:
    """Listings of the few prefixes preflight needs, each fetched once."""

    def __init__(self, client, bucket: str):
        self.client, self.bucket = client, bucket
        self._dirs: dict[str, dict[str, int]] = {}
        self._non_empty: dict[str, bool] = {}

    def has_files_under(self, directory: str) -> bool:
        if directory not in self._non_empty:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=_key(directory), MaxKeys=1)
            self._non_empty[directory] = page.get("KeyCount", 0) > 0
        return self._non_empty[directory]

    def has_file(self, path: str) -> bool:
        """True when the object exists and is not empty (an empty input is as bad as none)."""
        directory = str(PurePosixPath(path).parent)
        if directory not in self._dirs:
            sizes: dict[str, int] = {}
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=_key(directory) + "/", Delimiter="/"):
                for item in page.get("Contents", []):
                    sizes[item["Key"]] = item["Size"]
            self._dirs[directory] = sizes
        return self._dirs[directory].get(_key(path), 0) > 0


def _key(path: str) -> str:
    return f"{BUCKET_PREFIX}/{path}"


def find_missing(jobs: list[JobSpec], config: CampaignConfig, client) -> list[MissingInput]:
    """Every input of ``jobs`` absent from the bucket, each once, in Job order."""
    bucket = _Bucket(client, config.bucket)
    missing: list[MissingInput] = []
    for job in jobs:
        for needed in required_inputs(job, config.campaign):
            if needed in missing:
                continue
            present = (bucket.has_files_under(needed.path) if needed.path.endswith("/")
                       else bucket.has_file(needed.path))
            if not present:
                missing.append(needed)
    return missing


# -- the check -----------------------------------------------------------------------

def preflight(jobs: list[JobSpec], config: CampaignConfig, environ: Mapping[str, str] | None = None) -> None:
    """Check that the bucket is reachable and holds every input ``jobs`` read.

    Parameters
    ----------
    jobs : list of JobSpec
        The Jobs about to be applied.
    config : CampaignConfig
        Gives the bucket, the rclone remote and the campaign layout.
    environ : mapping, optional
        Environment to take ``RCLONE_CONFIG``, ``HOME`` and ``AWS_*`` from
        (default ``os.environ``).

    Raises
    ------
    PreflightError
        Listing every missing input with the stage that writes it, or naming
        why the bucket could not be checked.
    """
    access = s3_access(config.rclone_remote, environ)
    where = f"bucket '{config.bucket}' at {access.endpoint_url or 'the default AWS endpoint'}"
    try:
        client = access.client()
    except Exception as error:  # botocore refuses a malformed endpoint with a ValueError
        raise PreflightError(
            f"cannot use the S3 endpoint {access.endpoint_url!r} from {access.source}: "
            f"{_first_line(error)}; set it to a URL such as https://host.example.org") from None
    try:
        client.head_bucket(Bucket=config.bucket)
        missing = find_missing(jobs, config, client)
    except Exception as error:  # botocore raises many classes; each becomes one clear sentence
        raise PreflightError(_explain(error, where, access, config)) from None
    if missing:
        lines = "\n".join(f"  - {item.describe()}" for item in missing)
        raise PreflightError(
            f"{where} lacks {len(missing)} input(s) of the selected Jobs (paths below "
            f"{BUCKET_PREFIX}/):\n{lines}\nNothing was applied.", missing)


def _explain(error: Exception, where: str, access: S3Access, config: CampaignConfig) -> str:
    from botocore.exceptions import (ClientError, ConnectTimeoutError, EndpointConnectionError,
                                     ReadTimeoutError)

    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return (f"cannot reach the S3 endpoint {access.endpoint_url} (from {access.source}); check "
                f"the endpoint and your network or VPN")
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket") or (status == 404 and "Bucket" in code):
            return (f"{where} does not exist; check BUCKET ('{config.bucket}') in "
                    f"run-umbrella-windows.py")
        if code in ("403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId") or status == 403:
            return (f"{where} refused the credentials from {access.source} ({code or status}); "
                    f"download the rclone config again (README: Accessing results)")
        return f"{where} answered {code or status} ({_first_line(error)})"
    return f"checking {where} failed: {type(error).__name__}: {_first_line(error)}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


__all__ = ["PreflightError", "MissingInput", "S3Access", "preflight", "find_missing",
           "required_inputs", "s3_access", "rclone_config_path", "read_rclone_remote"]
