"""The one way to read a campaign's results tree, wherever it lives.

Analysis, ``--status``, ``--relaunch`` and preflight all read the results
layout (:mod:`protbench_nrp.layout`) through a :class:`ResultsStore`: a few
questions about paths relative to the results root (a file's text, whether
it exists, what a directory holds and how big its files are), answered by
:class:`LocalStore` for ``LOCAL_RESULT_DIR`` (or ``-o``) on this machine, or
by :class:`BucketStore` straight from the S3 bucket. Whatever cannot be read
(an unreachable endpoint, refused keys, a file that is a directory) raises
:class:`StoreError` naming the place and the fix; an absent file is an
answer, not an error.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Protocol

from .errors import ProtbenchError
from .layout import BUCKET_PREFIX
from .products import file_sizes
from .s3 import first_line

__all__ = ["ResultsStore", "LocalStore", "BucketStore", "StoreError"]


class StoreError(ProtbenchError):
    """The results could not be read; the message names where and how to fix it."""


class ResultsStore(Protocol):
    """What the readers of a results tree ask of it, by paths relative to its root (they never write)."""

    #: Where the results are, for messages: ``results in /data/results`` or ``results in s3://b/results``.
    location: str

    def describe(self, relative: PurePosixPath | str) -> str:
        """Where ``relative`` is, as the user would look for it (a local path or an ``s3://`` URL)."""

    def read_text(self, relative: PurePosixPath | str) -> str | None:
        """The file's text, or ``None`` when there is no such file."""

    def exists(self, relative: PurePosixPath | str) -> bool:
        """Whether a file (not a directory) is at ``relative``."""

    def list(self, directory: PurePosixPath | str) -> list[str]:
        """Names of the files and directories directly in ``directory``, sorted; ``[]`` when absent."""

    def sizes(self, directory: PurePosixPath | str) -> dict[str, int]:
        """Bytes of each file directly in ``directory`` by name (one listing); ``{}`` when absent."""


class LocalStore:
    """The results tree below ``root`` on this machine.

    Parameters
    ----------
    root : path-like
        The results root (the launcher's ``LOCAL_RESULT_DIR``, ``-o`` of the scripts).
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.location = f"results in {self.root}"

    def describe(self, relative: PurePosixPath | str) -> str:
        return str(self.root / relative)

    def read_text(self, relative: PurePosixPath | str) -> str | None:
        path = self.root / relative
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise StoreError(f"cannot read {path}: {error}; check that it is a readable text file") from None

    def exists(self, relative: PurePosixPath | str) -> bool:
        return (self.root / relative).is_file()

    def list(self, directory: PurePosixPath | str) -> list[str]:
        path = self.root / directory
        try:
            return sorted(entry.name for entry in path.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            raise StoreError(f"cannot list {path}: {error}; check its permissions") from None

    def sizes(self, directory: PurePosixPath | str) -> dict[str, int]:
        path = self.root / directory
        try:
            return file_sizes(path)
        except OSError as error:
            raise StoreError(f"cannot list {path}: {error}; check its permissions") from None


class BucketStore:
    """The results tree read straight from an S3 bucket: one request per question.

    Directories are listed with a delimiter, so listing a window's directory
    never lists its trajectory segments, and only the objects asked for are
    downloaded.

    Parameters
    ----------
    client : botocore S3 client
        From :func:`protbench_nrp.s3.bucket_client` or any ``boto3.client("s3")``.
    bucket : str
        Bucket name.
    prefix : str
        Key prefix of the results root (``results`` for ``nrp:BUCKET/results``).
    """

    def __init__(self, client, bucket: str, prefix: str = BUCKET_PREFIX):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.location = f"results in s3://{bucket}/{self.prefix}"

    def key(self, relative: PurePosixPath | str) -> str:
        relative = str(relative).strip("/")
        if relative in ("", "."):
            return self.prefix
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def describe(self, relative: PurePosixPath | str) -> str:
        return f"s3://{self.bucket}/{self.key(relative)}"

    def read_text(self, relative: PurePosixPath | str) -> str | None:
        try:
            data = self.client.get_object(Bucket=self.bucket, Key=self.key(relative))["Body"].read()
        except Exception as error:
            if _is_absent(error):
                return None
            raise self._explain(error, relative) from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise StoreError(f"cannot read {self.describe(relative)}: it is not UTF-8 text ({error}); "
                             f"it was not written by this project's scripts: remove or replace it") from None

    def exists(self, relative: PurePosixPath | str) -> bool:
        # A listing rather than HEAD: HEAD answers a bare 404 both for an absent key and for an
        # absent bucket, and a wrong bucket name must be an error, not "not there yet".
        key = self.key(relative)
        try:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except Exception as error:
            raise self._explain(error, relative) from None
        # The key itself sorts before every longer key it is a prefix of.
        return any(entry["Key"] == key for entry in page.get("Contents", []) or [])

    def _directory_prefix(self, directory: PurePosixPath | str) -> str:
        key = self.key(directory)
        return f"{key}/" if key else ""

    def _listing(self, directory: PurePosixPath | str) -> tuple[set[str], dict[str, int]]:
        """Sub-directory names and file sizes directly under ``directory``: one delimited listing,
        so nothing below a sub-directory (a window's trajectory segments) is ever listed."""
        prefix = self._directory_prefix(directory)
        subdirectories, files = set(), {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                subdirectories.update(entry["Prefix"][len(prefix):].rstrip("/")
                                      for entry in page.get("CommonPrefixes", []) or [])
                files.update((entry["Key"][len(prefix):], entry["Size"])
                             for entry in page.get("Contents", []) or [])
        except Exception as error:
            raise self._explain(error, directory) from None
        subdirectories.discard("")
        files.pop("", None)  # the "directory marker" object some tools leave
        return subdirectories, files

    def list(self, directory: PurePosixPath | str) -> list[str]:
        subdirectories, files = self._listing(directory)
        return sorted(subdirectories | set(files))

    def sizes(self, directory: PurePosixPath | str) -> dict[str, int]:
        return self._listing(directory)[1]

    def write_bytes(self, relative: PurePosixPath | str, data: bytes, content_type: str) -> None:
        """Upload one object (a report to share: a public bucket serves it over HTTP as is)."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(relative), Body=data, ContentType=content_type)
        except Exception as error:
            raise self._explain(error, relative, "write") from None

    def _explain(self, error: Exception, relative: PurePosixPath | str, verb: str = "read") -> StoreError:
        return StoreError(
            f"cannot {verb} {self.describe(relative)}: {first_line(error)}. Check the bucket name (BUCKET, --bucket), "
            f"the endpoint and the keys (the rclone config's remote, or AWS_ENDPOINT_URL, "
            f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")


def _is_absent(error: Exception) -> bool:
    response = getattr(error, "response", None)
    code = (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("NoSuchKey", "404", "NotFound")
