"""A launch pins IMAGE to its digest and proteinbenchmark to a full commit; without them it applies nothing."""

from __future__ import annotations

import pytest

from .conftest import IMAGE_NAME, all_containers, assert_refused_untouched, documents, env_of

PREFIX = "protbench.openforcefield.org"


def _main(manifest: dict) -> dict:
    (main,) = [c for c in manifest["spec"]["template"]["spec"]["containers"] if c["name"] == "main"]
    return main


def test_a_launch_applies_jobs_pinned_by_digest_with_proteinbenchmark_at_a_full_commit(launcher_repo):
    result = launcher_repo.run("--replicas", "1,2", "--windows", "0-1")

    assert result.returncode == 0, result.stderr
    pinned = f"{launcher_repo.registry.host}/{IMAGE_NAME}@{launcher_repo.image_digest}"
    assert f"Pinned IMAGE {launcher_repo.image} to {launcher_repo.image_digest}" in result.stdout
    applied = launcher_repo.applied()
    assert len(applied) == 4
    for path, received in applied:
        (manifest,) = documents(received.decode())
        assert _main(manifest)["image"] == pinned
        for container in all_containers(manifest):
            env = env_of(container)
            assert env["PROTBENCH_PROTEINBENCHMARK_REF"] == launcher_repo.proteinbenchmark_commit
            assert env["PROTBENCH_PROTEINBENCHMARK_REPO"] == str(launcher_repo.proteinbenchmark)
            assert env["PROTBENCH_IMAGE"] == pinned
        notes = manifest["metadata"]["annotations"]
        assert notes[f"{PREFIX}/image"] == pinned
        assert notes[f"{PREFIX}/image-tag"] == launcher_repo.image
        assert notes[f"{PREFIX}/proteinbenchmark-ref"] == launcher_repo.proteinbenchmark_commit
        assert notes[f"{PREFIX}/proteinbenchmark-requested-ref"] == "main"
        assert path.read_bytes() == received  # the provenance file holds the pinned Job too


def test_a_tag_pushed_again_pins_later_launches_to_the_new_digest_and_leaves_earlier_ones(launcher_repo):
    assert launcher_repo.run("--replicas", "1", "--windows", "0").returncode == 0
    new_digest = launcher_repo.registry.push(IMAGE_NAME, "latest")

    assert launcher_repo.run("--replicas", "1", "--windows", "1").returncode == 0

    first, second = (documents(received.decode())[0] for _, received in launcher_repo.applied())
    assert _main(first)["image"].endswith(launcher_repo.image_digest)
    assert _main(second)["image"].endswith(new_digest)


@pytest.mark.parametrize("change, needles", [
    ("registry down", ("cannot reach the registry 127.0.0.1:", "IMAGE", "--dry-run")),
    ("unknown tag", ("the registry has no tag 'v9'", "Rebuild Docker image")),
    ("private image", ("refused an anonymous pull token",)),
    ("repository unreachable", ("cannot reach PROTEINBENCHMARK_REPO",)),
    ("unknown ref", ("PROTEINBENCHMARK_REF 'no-such-branch' is no branch or tag of",)),
    ("no repository", ("PROTEINBENCHMARK_REPO is empty",)),
])
def test_what_cannot_be_pinned_refuses_the_launch_and_applies_nothing(launcher_repo, change, needles, closed_port):
    if change == "registry down":
        launcher_repo.set_constants(IMAGE=f"127.0.0.1:{closed_port}/{IMAGE_NAME}:latest")
    elif change == "unknown tag":
        launcher_repo.set_constants(IMAGE=launcher_repo.image.replace(":latest", ":v9"))
    elif change == "private image":
        launcher_repo.registry.private.add(IMAGE_NAME)
    elif change == "repository unreachable":
        launcher_repo.set_constants(PROTEINBENCHMARK_REPO=str(launcher_repo.root / "absent.git"))
    elif change == "unknown ref":
        launcher_repo.set_constants(PROTEINBENCHMARK_REF="no-such-branch")
    elif change == "no repository":
        launcher_repo.set_constants(PROTEINBENCHMARK_REPO="")

    result = launcher_repo.run("--replicas", "1", "--windows", "0")

    assert_refused_untouched(launcher_repo, result, *needles)


def test_a_dry_run_asks_no_registry_and_says_the_tag_is_unresolved(launcher_repo):
    launcher_repo.registry.stop()  # no network at all: the dry run must not notice

    result = launcher_repo.run("--dry-run", "--replicas", "1", "--windows", "0")

    assert result.returncode == 0, result.stderr
    (manifest,) = documents(result.stdout)
    assert _main(manifest)["image"] == launcher_repo.image
    assert env_of(_main(manifest))["PROTBENCH_PROTEINBENCHMARK_REF"] == "main"
    assert f"IMAGE {launcher_repo.image} and PROTEINBENCHMARK_REF main are shown unresolved" in result.stderr
    assert launcher_repo.registry.requests == []
    launcher_repo.registry.start()  # for the fixture's teardown
