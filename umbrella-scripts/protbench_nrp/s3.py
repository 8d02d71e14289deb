"""The one module that finds S3 credentials and builds S3 clients for the results bucket.

Credentials come from the same place rclone takes them: the section
``[RCLONE_REMOTE]`` of the rclone config (``$RCLONE_CONFIG``, else
``~/.config/rclone/rclone.conf``, downloaded as the README says). Without
that file or section, the standard ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL`` variables are used.

Every failure is an :class:`S3AccessError` whose message names the cause and
the fix and never contains a key. A caller with a way round the bucket adds
it with ``other_fix`` (preflight: ``"launch with --skip-preflight"``) instead
of editing the message afterwards. Reading the results tree itself is
:class:`protbench_nrp.store.BucketStore`'s job.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from .errors import ProtbenchError

#: Bounded network behaviour: an unreachable endpoint fails in seconds, not minutes.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
MAX_ATTEMPTS = 2

_ENCRYPTED_MARKER = "RCLONE_ENCRYPT_V0:"
_DEFAULT_REGION = "us-east-1"


class S3AccessError(ProtbenchError):
    """No usable credentials or endpoint for the bucket; the message names the cause and the fix."""


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
        """A boto3 S3 client with short timeouts and few retries.

        Raises
        ------
        S3AccessError
            When the endpoint is not a URL botocore accepts.
        """
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                        s3={"addressing_style": "path"})
        try:
            return boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
                aws_session_token=self.session_token, config=config)
        except ValueError as error:  # botocore refuses a malformed endpoint with a ValueError
            raise S3AccessError(
                f"cannot use the S3 endpoint {self.endpoint_url!r} from {self.source}: "
                f"{first_line(error)}; set it to a URL such as https://host.example.org") from None


def rclone_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The rclone config rclone itself would read: ``$RCLONE_CONFIG``, else the default place."""
    environ = os.environ if environ is None else environ
    if environ.get("RCLONE_CONFIG"):
        return Path(environ["RCLONE_CONFIG"]).expanduser()
    home = Path(environ.get("HOME") or Path.home())
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "rclone" / "rclone.conf"


def _or(other_fix: str) -> str:
    return f", or {other_fix}" if other_fix else ""


def read_rclone_remote(path: Path, remote: str, *, other_fix: str = "") -> dict[str, str] | None:
    """The ``key = value`` pairs of section ``[remote]`` of an rclone config, or ``None``.

    Parameters
    ----------
    other_fix : str
        Another way out the caller offers, added to the fixes (``"launch with --skip-preflight"``).

    Raises
    ------
    S3AccessError
        When the file is unreadable, encrypted or not an rclone config.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or first_line(error)
        raise S3AccessError(f"cannot read the rclone config {path}: {reason}; make it a readable text file "
                            f"(download it again as the README says) or point RCLONE_CONFIG at one"
                            f"{_or(other_fix)}") from None
    if _ENCRYPTED_MARKER in text:
        raise S3AccessError(
            f"the rclone config {path} is encrypted, which only rclone itself can read; set "
            f"AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL instead{_or(other_fix)}")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as error:
        raise S3AccessError(f"{path} is not an rclone config ({first_line(error)}); "
                            f"download it again (README: Accessing results)") from None
    if not parser.has_section(remote):
        return None
    return {key: value.strip().strip("'\"") for key, value in parser.items(remote)}


def s3_access(remote: str, environ: Mapping[str, str] | None = None, *, other_fix: str = "") -> S3Access:
    """Credentials and endpoint for ``remote``: its rclone config section, else the AWS variables.

    Parameters
    ----------
    remote : str
        The rclone remote of the bucket (``RCLONE_REMOTE``, ``--rclone-remote``).
    environ : mapping, optional
        Where ``RCLONE_CONFIG``, ``HOME`` and ``AWS_*`` are read (default ``os.environ``).
    other_fix : str
        Another way out the caller offers, added to the fixes of the messages.

    Raises
    ------
    S3AccessError
        When neither source provides a key pair, or the remote is not S3.
    """
    environ = os.environ if environ is None else environ
    path = rclone_config_path(environ)
    section = read_rclone_remote(path, remote, other_fix=other_fix)
    if section is not None:
        if section.get("type", "s3") != "s3":
            raise S3AccessError(f"remote '{remote}' in {path} is of type '{section['type']}', not "
                                f"s3; set RCLONE_REMOTE to the S3 remote of the bucket")
        key, secret = section.get("access_key_id", ""), section.get("secret_access_key", "")
        if key and secret:
            return S3Access(_endpoint(section.get("endpoint")) or _env_endpoint(environ), key, secret,
                            section.get("region") or _env_region(environ),
                            f"rclone remote '{remote}' in {path}", section.get("session_token") or None)
    key, secret = environ.get("AWS_ACCESS_KEY_ID", ""), environ.get("AWS_SECRET_ACCESS_KEY", "")
    if key and secret:
        endpoint = _env_endpoint(environ) or (_endpoint(section.get("endpoint")) if section else None)
        return S3Access(endpoint, key, secret, _env_region(environ), "the AWS_* environment variables",
                        environ.get("AWS_SESSION_TOKEN") or None)
    where = (f"remote '{remote}' in {path} has no access_key_id/secret_access_key"
             if section is not None else f"{path} has no remote '{remote}'")
    raise S3AccessError(
        f"no credentials for the bucket: {where}, and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are "
        f"not set. Download the rclone config (README: Accessing results) or set RCLONE_CONFIG "
        f"to it{_or(other_fix)}")


def bucket_client(endpoint_url: str | None = None, rclone_remote: str = "nrp",
                  environ: Mapping[str, str] | None = None, *, other_fix: str = ""):
    """An S3 client for the results bucket, with the credentials :func:`s3_access` finds.

    ``endpoint_url`` (``--endpoint-url``) wins over the rclone config and the
    AWS variables.

    Raises
    ------
    S3AccessError
        When no credentials are found, or the endpoint is not a URL.
    """
    access = s3_access(rclone_remote, environ, other_fix=other_fix)
    if endpoint_url:
        access = replace(access, endpoint_url=endpoint_url)
    return access.client()


def bucket_place(access: S3Access, bucket: str) -> str:
    """The bucket and its endpoint, as messages name them: ``bucket 'b' at https://host``."""
    return f"bucket '{bucket}' at {access.endpoint_url or 'the default AWS endpoint'}"


def open_bucket(access: S3Access, bucket: str, bucket_fix: str):
    """A client for ``bucket`` once one request showed the endpoint, the keys and the bucket work.

    Parameters
    ----------
    bucket_fix : str
        What to do when the bucket does not exist (where its name is set).

    Raises
    ------
    S3AccessError
        Naming the cause (unreachable endpoint, refused keys, no such bucket) and the fix.
    """
    client = access.client()
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as error:  # botocore raises many classes; each becomes one clear sentence
        raise S3AccessError(explain(error, bucket_place(access, bucket), access, bucket_fix)) from None
    return client


def explain(error: Exception, where: str, access: S3Access, bucket_fix: str) -> str:
    """One sentence for a failed request to the bucket ``where``, naming the cause and the fix.

    Parameters
    ----------
    error : Exception
        What botocore raised.
    where : str
        The bucket and endpoint, as the user knows them (``bucket 'b' at https://...``).
    access : S3Access
        Where the endpoint and keys came from.
    bucket_fix : str
        What to do when the bucket does not exist (where its name is set).
    """
    from botocore.exceptions import (ClientError, ConnectTimeoutError, EndpointConnectionError,
                                     ReadTimeoutError)

    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return (f"cannot reach the S3 endpoint {access.endpoint_url} (from {access.source}); check "
                f"the endpoint and your network or VPN")
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket") or (status == 404 and "Bucket" in code):
            return f"{where} does not exist; {bucket_fix}"
        if code in ("403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId") or status == 403:
            return (f"{where} refused the credentials from {access.source} ({code or status}); "
                    f"download the rclone config again (README: Accessing results)")
        return f"{where} answered {code or status} ({first_line(error)})"
    return f"checking {where} failed: {type(error).__name__}: {first_line(error)}"


def _endpoint(value: str | None) -> str | None:
    # rclone accepts a bare host name; boto3 needs a URL
    if not value:
        return None
    return value if "://" in value else f"https://{value}"


def _env_endpoint(environ: Mapping[str, str]) -> str | None:
    return _endpoint(environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL"))


def _env_region(environ: Mapping[str, str]) -> str:
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or _DEFAULT_REGION


def first_line(error: BaseException) -> str:
    """The first line of an error's message (botocore's run on), or its class name."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


__all__ = ["S3Access", "S3AccessError", "s3_access", "bucket_client", "rclone_config_path",
           "read_rclone_remote", "bucket_place", "open_bucket", "explain", "first_line",
           "CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "MAX_ATTEMPTS"]
