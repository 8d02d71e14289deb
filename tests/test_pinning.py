"""Pinning against a registry speaking the real protocol on loopback, and real bare git repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from protbench_nrp.pinning import (ImageReference, PinningError, resolve_git_ref, resolve_image)

from tests.registry import Registry

NAME = "openforcefield/proteinbenchmark-nrp"


@pytest.fixture
def registry():
    server = Registry().start()
    yield server
    server.stop()


def test_a_tag_resolves_to_the_digest_the_registry_serves_after_the_token_dance(registry):
    digest = registry.push(NAME, "latest")

    pinned = resolve_image(f"{registry.host}/{NAME}:latest")

    assert pinned.digest == digest
    assert pinned.pinned_reference == f"{registry.host}/{NAME}@{digest}"
    assert pinned.tag_reference == f"{registry.host}/{NAME}:latest"
    methods = [(method, path) for method, path, _ in registry.requests]
    # challenged, then the anonymous token, then the same request with it
    assert methods == [("HEAD", f"/v2/{NAME}/manifests/latest"), ("GET", "/token"),
                       ("HEAD", f"/v2/{NAME}/manifests/latest")]
    accept = registry.requests[-1][2]["Accept"]
    for media_type in ("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                       "application/vnd.docker.distribution.manifest.list.v2+json",
                       "application/vnd.docker.distribution.manifest.v2+json"):
        assert media_type in accept


def test_a_pushed_tag_moves_and_the_next_resolution_follows_it(registry):
    first = registry.push(NAME, "latest")
    assert resolve_image(f"{registry.host}/{NAME}:latest").digest == first
    second = registry.push(NAME, "latest")
    assert second != first
    assert resolve_image(f"{registry.host}/{NAME}:latest").digest == second


@pytest.mark.parametrize("media_type", ["application/vnd.docker.distribution.manifest.v2+json",
                                        "application/vnd.docker.distribution.manifest.list.v2+json",
                                        "application/vnd.oci.image.manifest.v1+json"])
def test_every_manifest_kind_resolves(registry, media_type):
    digest = registry.push(NAME, "v1", media_type)
    assert resolve_image(f"{registry.host}/{NAME}:v1").digest == digest


def test_a_registry_that_sends_no_digest_on_head_is_asked_with_get_and_the_body_hashed(registry):
    registry.digest_on_head = False
    digest = registry.push(NAME, "latest")
    assert resolve_image(f"{registry.host}/{NAME}:latest").digest == digest
    assert [m for m, p, _ in registry.requests if p.endswith("/manifests/latest")][-1] == "GET"


def test_an_image_given_by_digest_needs_no_registry():
    digest = "sha256:" + "ab" * 32
    pinned = resolve_image(f"127.0.0.1:1/{NAME}@{digest}")
    assert pinned.pinned_reference == f"127.0.0.1:1/{NAME}@{digest}"


@pytest.mark.parametrize("setup, image, expected", [
    ("unknown tag", "{host}/" + NAME + ":nope", "the registry has no tag 'nope'"),
    ("private", "{host}/" + NAME + ":latest", "refused an anonymous pull token"),
    ("unreachable", "127.0.0.1:{closed}/" + NAME + ":latest", "cannot reach the registry 127.0.0.1:"),
], ids=["unknown tag", "private image", "unreachable registry"])
def test_refusals_name_the_image_and_the_fix(registry, setup, image, expected, closed_port):
    registry.push(NAME, "latest")
    if setup == "private":
        registry.private.add(NAME)
    image = image.format(host=registry.host, closed=closed_port)
    with pytest.raises(PinningError) as error:
        resolve_image(image, timeout_s=5)
    assert expected in str(error.value)
    assert "IMAGE" in str(error.value)


@pytest.mark.parametrize("image, registry_host, name, tag, url", [
    ("ghcr.io/openforcefield/proteinbenchmark-nrp:latest", "ghcr.io", NAME, "latest",
     "https://ghcr.io"),
    ("ubuntu", "docker.io", "library/ubuntu", "latest", "https://registry-1.docker.io"),
    ("localhost:5000/x/y:2.1", "localhost:5000", "x/y", "2.1", "http://localhost:5000"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", "http://127.0.0.1:5000"),
    ("localhost/x:t", "localhost", "x", "t", "http://localhost"),
    ("registry.example.org:443/a/b/c:t", "registry.example.org:443", "a/b/c", "t",
     "https://registry.example.org:443"),
])
def test_image_references_are_read_as_docker_reads_them(image, registry_host, name, tag, url):
    reference = ImageReference.parse(image)
    assert (reference.registry, reference.name, reference.tag, reference.base_url) == \
        (registry_host, name, tag, url)


# -- git ----------------------------------------------------------------------------------------

def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path) -> tuple[Path, dict[str, str]]:
    """A bare repository with a branch, a lightweight and an annotated tag, and what each names."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    git(work, "commit", "-q", "--allow-empty", "-m", "one")
    first = git(work, "rev-parse", "HEAD")
    git(work, "tag", "-a", "v1.0", "-m", "release")
    git(work, "tag", "light")
    git(work, "commit", "-q", "--allow-empty", "-m", "two")
    git(work, "checkout", "-q", "-b", "feature/main")
    git(work, "commit", "-q", "--allow-empty", "-m", "three")
    feature = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "main")
    main = git(work, "rev-parse", "HEAD")
    bare = tmp_path / "proteinbenchmark.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare, {"main": main, "v1.0": first, "light": first, "feature/main": feature}


@pytest.mark.parametrize("ref", ["main", "v1.0", "light", "feature/main"])
def test_a_branch_or_tag_resolves_to_its_full_commit(upstream, ref):
    bare, commits = upstream
    assert resolve_git_ref(str(bare), ref) == commits[ref]


def test_a_full_commit_is_kept_as_it_is(upstream):
    bare, commits = upstream
    assert resolve_git_ref(str(bare), commits["v1.0"]) == commits["v1.0"]


@pytest.mark.parametrize("ref, expected", [
    ("nope", "PROTEINBENCHMARK_REF 'nope' is no branch or tag of"),
    ("abc1234", "give all 40 digits"),
])
def test_an_unknown_ref_is_refused(upstream, ref, expected):
    bare, _ = upstream
    with pytest.raises(PinningError, match=expected):
        resolve_git_ref(str(bare), ref)


def test_an_unreachable_repository_is_refused(tmp_path):
    with pytest.raises(PinningError, match="cannot reach PROTEINBENCHMARK_REPO"):
        resolve_git_ref(str(tmp_path / "absent.git"), "main")
