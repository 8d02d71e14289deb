"""Pin what the pods run: the image to its digest, proteinbenchmark to a full commit.

A tag (``:latest``) and a branch (``main``) move; a campaign runs for weeks, so
the launcher resolves both once, at launch, and every Job runs exactly what
was resolved:

* :func:`resolve_image` asks the image's registry for the manifest digest of
  its tag over the OCI distribution API (``HEAD /v2/<name>/manifests/<tag>``),
  fetching the anonymous pull token a registry such as ghcr.io hands out for
  public images when it answers 401. A registry on ``localhost`` or
  ``127.0.0.1`` is spoken to over plain HTTP, as Docker does.
* :func:`resolve_git_ref` turns a branch or tag into its full commit with
  ``git ls-remote``.

Only the standard library speaks HTTP here (urllib); the launcher needs no
extra package for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from .errors import ProtbenchError

#: What the launcher accepts as a manifest: a multi-platform index or list, or one image's manifest.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

#: Longest wait for one answer of a registry or ``git ls-remote``.
NETWORK_TIMEOUT_S = 30

#: Docker Hub: the registry of names without a host, and its API host.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

#: Hosts spoken to over plain HTTP (with any port), as Docker treats them.
PLAIN_HTTP_HOSTS = ("localhost", "127.0.0.1", "[::1]")

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class PinningError(ProtbenchError):
    """The image or the proteinbenchmark ref could not be resolved; the message names the fix."""


# -- images ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageReference:
    """``registry/name:tag`` split into its parts (``digest`` when already pinned)."""

    registry: str
    name: str
    tag: str = "latest"
    digest: str = ""

    @classmethod
    def parse(cls, image: str) -> ImageReference:
        """Split an image reference as Docker reads it (``ubuntu`` is ``docker.io/library/ubuntu:latest``)."""
        rest, _, digest = image.partition("@")
        if digest and not _DIGEST.match(digest):
            raise PinningError(f"IMAGE {image!r} has digest {digest!r}; a digest is sha256: and 64 "
                               f"hexadecimal digits")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
        name, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
        if registry == DOCKER_HUB and "/" not in name:
            name = f"library/{name}"
        if not name or (colon and not _TAG.match(tag)):
            raise PinningError(f"IMAGE {image!r} is not an image reference like "
                               f"'ghcr.io/owner/name:tag'; fix IMAGE in run-umbrella-windows.py")
        return cls(registry, name, tag or "latest", digest)

    @property
    def repository(self) -> str:
        """``registry/name`` as written in an image reference."""
        return f"{self.registry}/{self.name}"

    @property
    def tagged(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def base_url(self) -> str:
        host = DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry
        plain = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        return f"{'http' if plain in PLAIN_HTTP_HOSTS else 'https'}://{host}"


@dataclass(frozen=True)
class PinnedImage:
    """An image tag and the digest it named when the campaign was launched."""

    tag_reference: str  # as IMAGE gave it, e.g. ghcr.io/owner/name:latest
    digest: str         # sha256:...
    repository: str     # ghcr.io/owner/name

    @property
    def pinned_reference(self) -> str:
        """What the Jobs run: ``repository@sha256:...``."""
        return f"{self.repository}@{self.digest}"


def resolve_image(image: str, timeout_s: float = NETWORK_TIMEOUT_S) -> PinnedImage:
    """The digest ``image``'s tag names now, asked of its registry.

    Raises
    ------
    PinningError
        When the registry cannot be reached, refuses the pull token, or does
        not know the tag; the message names IMAGE and what to do.
    """
    reference = ImageReference.parse(image)
    if reference.digest:
        return PinnedImage(image, reference.digest, reference.repository)
    url = f"{reference.base_url}/v2/{reference.name}/manifests/{urllib.parse.quote(reference.tag)}"
    digest = _RegistrySession(image, timeout_s).manifest_digest(url)
    return PinnedImage(image, digest, reference.repository)


class _RegistrySession:
    """The requests of one resolution, with the bearer token once the registry asked for one."""

    def __init__(self, image: str, timeout_s: float):
        self.image = image
        self.timeout_s = timeout_s
        self.token = ""

    def manifest_digest(self, url: str) -> str:
        for method in ("HEAD", "GET"):  # GET for registries that send no digest on HEAD
            status, headers, body = self._request(url, method)
            if status == 401 and not self.token:
                self.token = self._anonymous_token(headers.get("WWW-Authenticate", ""))
                status, headers, body = self._request(url, method)
            if status == 404:
                raise PinningError(f"the registry has no tag {url.rsplit('/', 1)[-1]!r} of IMAGE "
                                   f"{self.image!r} ({url}); push the image (the 'Rebuild Docker image' "
                                   f"workflow) or fix IMAGE in run-umbrella-windows.py")
            if status in (401, 403):
                raise PinningError(f"the registry refused to show IMAGE {self.image!r} anonymously "
                                   f"(HTTP {status} from {url}); make the package public, or fix IMAGE")
            if status != 200:
                raise PinningError(f"the registry answered HTTP {status} for IMAGE {self.image!r} ({url}); "
                                   f"try again later, or check IMAGE in run-umbrella-windows.py")
            digest = headers.get("Docker-Content-Digest", "").strip()
            if method == "GET" and not digest:
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if digest:
                if not _DIGEST.match(digest):
                    raise PinningError(f"the registry gave IMAGE {self.image!r} the digest {digest!r}, "
                                       f"which is not sha256:<64 hex digits>; cannot pin it")
                return digest
        raise AssertionError("unreachable: a GET always yields a digest")

    def _request(self, url: str, method: str) -> tuple[int, dict, bytes]:
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return self._open(urllib.request.Request(url, method=method, headers=headers))

    def _open(self, request: urllib.request.Request) -> tuple[int, dict, bytes]:
        host = urllib.parse.urlsplit(request.full_url).hostname or ""
        # A loopback registry is this machine's: never send it through a proxy.
        opener = (urllib.request.build_opener(urllib.request.ProxyHandler({}))
                  if host in ("localhost", "127.0.0.1", "::1") else urllib.request.build_opener())
        try:
            with opener.open(request, timeout=self.timeout_s) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, dict(error.headers or {}), error.read()
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            host = urllib.parse.urlsplit(request.full_url).netloc
            raise PinningError(f"cannot reach the registry {host} of IMAGE {self.image!r} ({reason}); "
                               f"the launch needs it to pin the image to its digest. Check the network "
                               f"and IMAGE, or preview the Jobs with --dry-run") from None

    def _anonymous_token(self, challenge: str) -> str:
        """Follow a ``Bearer realm=...,service=...,scope=...`` challenge to an anonymous pull token."""
        scheme, _, params = challenge.partition(" ")
        values = dict(_CHALLENGE_PARAM.findall(params))
        if scheme.lower() != "bearer" or "realm" not in values:
            raise PinningError(f"the registry wants credentials for IMAGE {self.image!r} (challenge "
                               f"{challenge or 'none'!r}) and offers no anonymous token; make the "
                               f"image public, or fix IMAGE")
        query = urllib.parse.urlencode({k: v for k, v in values.items() if k in ("service", "scope")})
        url = values["realm"] + ("&" if "?" in values["realm"] else "?") + query if query else values["realm"]
        status, _headers, body = self._open(urllib.request.Request(url, method="GET"))
        if status != 200:
            raise PinningError(f"the registry's token service refused an anonymous pull token for IMAGE "
                               f"{self.image!r} (HTTP {status} from {url}); the image may be private: "
                               f"make it public, or fix IMAGE")
        try:
            payload = json.loads(body)
            token = payload.get("token") or payload.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise PinningError(f"the registry's token service ({url}) sent no token for IMAGE {self.image!r}")
        return token


# -- proteinbenchmark ----------------------------------------------------------------------

def resolve_git_ref(repo: str, ref: str, timeout_s: float = NETWORK_TIMEOUT_S) -> str:
    """The full commit that branch or tag ``ref`` of ``repo`` names now (``git ls-remote``).

    A full 40-digit commit is returned as it is: it cannot move. An annotated
    tag resolves to the commit it points at, not to the tag object.

    Raises
    ------
    PinningError
        When ``repo`` cannot be reached, or names no branch or tag ``ref``.
    """
    if _COMMIT.match(ref):
        return ref
    try:
        done = subprocess.run(["git", "ls-remote", "--", repo, ref, f"{ref}^{{}}"], capture_output=True,
                              text=True, timeout=timeout_s, env=_git_env(), check=False)
    except subprocess.TimeoutExpired:
        raise PinningError(f"git ls-remote {repo} gave no answer in {timeout_s:g} s; PROTEINBENCHMARK_REPO "
                           f"must be reachable to pin PROTEINBENCHMARK_REF {ref!r} to a commit") from None
    except OSError as error:
        raise PinningError(f"cannot run git to resolve PROTEINBENCHMARK_REF ({error}); install git") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise PinningError(f"cannot reach PROTEINBENCHMARK_REPO {repo!r} to resolve PROTEINBENCHMARK_REF "
                           f"{ref!r} ({reason}); check the network and PROTEINBENCHMARK_REPO")
    refs = {}
    for line in done.stdout.splitlines():
        commit, _, name = line.partition("\t")
        refs[name.strip()] = commit.strip()
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", f"{ref}^{{}}", ref):
        if name in refs and _COMMIT.match(refs[name]):
            # A branch and a tag of one name: git itself prefers the tag (gitrevisions(7)).
            return refs[name]
    hint = (" (an abbreviated commit cannot be looked up remotely: give all 40 digits)"
            if re.fullmatch(r"[0-9a-f]{4,39}", ref) else "")
    raise PinningError(f"PROTEINBENCHMARK_REF {ref!r} is no branch or tag of {repo}{hint}; set it to a "
                       f"branch, a tag or a full commit in run-umbrella-windows.py")


def _git_env() -> dict[str, str]:
    # Never wait for a password prompt: a public repository needs none.
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0"}


def is_full_commit(ref: str) -> bool:
    return bool(_COMMIT.match(ref))


# -- both at once -----------------------------------------------------------------------

@dataclass(frozen=True)
class PinnedSoftware:
    """What a launch pinned: the image by digest and proteinbenchmark by commit."""

    image: PinnedImage
    proteinbenchmark_ref: str      # as PROTEINBENCHMARK_REF gave it, e.g. main
    proteinbenchmark_commit: str   # its full commit at launch


def pin_software(image: str, proteinbenchmark_repo: str, proteinbenchmark_ref: str,
                 timeout_s: float = NETWORK_TIMEOUT_S) -> PinnedSoftware:
    """Resolve both; raises :class:`PinningError` naming the first that cannot be."""
    pinned_image = resolve_image(image, timeout_s)
    commit = resolve_git_ref(proteinbenchmark_repo, proteinbenchmark_ref, timeout_s)
    return PinnedSoftware(pinned_image, proteinbenchmark_ref, commit)
