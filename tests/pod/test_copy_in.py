"""The init container's copy from the bucket (copy-in.sh), run from a rendered manifest."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.pod.harness import (POD_SCRIPTS, POD_UID, REMOTE, VENV_BIN, as_pod_user, fs_group_volume,
                               requires_root, seed_inputs)

def _copied(pod, relative: str) -> Path:
    return pod.results / relative


def test_init_copies_present_inputs_and_skips_absent_ones(make_pod, bucket, villin_inputs):
    seed_inputs(bucket, villin_inputs)
    campaign = villin_inputs.campaign
    pod = make_pod(window=4)
    required = pod.job.env["PROTBENCH_REQUIRED_FILES"].splitlines()
    assert f"{campaign.window_dir(1, 4)}/" in required  # the window's own outputs: absent so far

    result = pod.run("init-rclone")

    assert result.returncode == 0, result.stderr
    for path in [campaign.system_xml, campaign.contacts_file, campaign.minimized_pdb,
                 campaign.steered_state(1), campaign.window_pdb(1, 4)]:
        assert _copied(pod, str(path)).read_bytes() == (villin_inputs.root / path).read_bytes()
    # only what the Job needs: not the other windows' structures
    assert not _copied(pod, str(campaign.window_pdb(1, 5))).exists()
    assert not _copied(pod, str(campaign.window_dir(1, 4))).exists()
    assert f"results/{campaign.window_dir(1, 4)}/ is not in the bucket yet; skipped" in result.stdout
    # rclone keeps the bucket's modification times, which lets the first upload skip unchanged files
    key = f"results/{campaign.steered_state(1)}"
    remote_mtime = bucket.client.head_object(Bucket=bucket.name, Key=key)["LastModified"].timestamp()
    assert abs(_copied(pod, str(campaign.steered_state(1))).stat().st_mtime - remote_mtime) < 1.0


def test_init_restores_earlier_outputs_of_the_same_window(make_pod, bucket, villin_inputs, tmp_path):
    seed_inputs(bucket, villin_inputs)
    window_dir = villin_inputs.campaign.window_dir(1, 2)
    earlier = tmp_path / "earlier"
    (earlier / window_dir).mkdir(parents=True)
    (earlier / window_dir / "villin-amber14-vacuum-production.out").write_text("#header\n1 2\n")
    (earlier / window_dir / "villin-amber14-vacuum-production.chk").write_bytes(b"\x00chk" * 100)
    bucket.put_tree(earlier, str(window_dir))
    pod = make_pod(window=2)

    result = pod.run("init-rclone")

    assert result.returncode == 0, result.stderr
    for name in ("villin-amber14-vacuum-production.out", "villin-amber14-vacuum-production.chk"):
        assert (pod.results / window_dir / name).read_bytes() == (earlier / window_dir / name).read_bytes()
    assert f"copied results/{window_dir}/ (2 files)" in result.stdout


def test_absent_inputs_fail_the_pod_with_66_naming_each(make_pod, bucket, villin_inputs):
    # steered MD of this replica has not run: its state and window structures are absent
    campaign = villin_inputs.campaign
    bucket.put_tree(villin_inputs.root, str(campaign.setup_dir))
    pod = make_pod(window=0)

    result = pod.run("init-rclone")

    assert result.returncode == 66, result.stdout + result.stderr
    assert (pod.results / campaign.system_xml).is_file()
    assert (f"inputs missing from 'podtest:{bucket.name}': results/{campaign.steered_state(1)} "
            f"results/{campaign.window_pdb(1, 0)}; run the stage that writes them") in result.stderr
    # the window's own outputs are absent too, and that is no error: its first pod writes them
    assert f"results/{campaign.window_dir(1, 0)}/ is not in the bucket yet; skipped" in result.stdout


def test_a_missing_input_directory_fails_the_pod_with_66(make_pod, bucket, villin_inputs):
    seed_inputs(bucket, villin_inputs)
    campaign = villin_inputs.campaign
    for key in list(bucket.latest()):
        if key.startswith(f"results/{campaign.setup_dir}/"):
            bucket.client.delete_object(Bucket=bucket.name, Key=key)
    pod = make_pod(window=0)

    result = pod.run("init-rclone")

    assert result.returncode == 66, result.stdout + result.stderr
    assert f"results/{campaign.setup_dir}/" in result.stderr.split("inputs missing")[1]


@requires_root
def test_files_from_init_are_writable_by_the_main_container_user(make_pod, bucket, villin_inputs,
                                                                  shared_dir, tmp_path):
    seed_inputs(bucket, villin_inputs)
    window_dir = villin_inputs.campaign.window_dir(1, 1)
    earlier = tmp_path / "earlier"
    (earlier / window_dir).mkdir(parents=True)
    (earlier / window_dir / "villin-amber14-vacuum-production.out").write_text("#header\n")
    bucket.put_tree(earlier, str(window_dir))
    pod = make_pod(window=1)
    # the pod's volumes, somewhere the pod's user can reach
    for attribute in ("results", "home"):
        moved = shared_dir / attribute
        moved.mkdir()
        setattr(pod, attribute, moved)
    secrets = shared_dir / "secrets"
    secrets.mkdir()
    pod.rclone_config = Path(shutil.copy(pod.rclone_config, secrets / "rclone.conf"))
    # The image's checkout and rclone, which its user can reach wherever this checkout lies
    # (a clone in a mode-700 directory, such as root's home or a mktemp -d folder, cannot be).
    pod.repo = shared_dir / "repo"
    shutil.copytree(REPO_ROOT / POD_SCRIPTS, pod.repo / POD_SCRIPTS)
    image_bin = shared_dir / "bin"
    image_bin.mkdir()
    shutil.copy2(shutil.which("rclone", path=str(VENV_BIN)), image_bin / "rclone")
    user = as_pod_user()
    fs_group_volume(pod.results)
    fs_group_volume(pod.home, owner=True)  # the secret stays root's, readable, as mounted secrets are

    result = pod.run("init-rclone", prefix=user, PATH=f"{image_bin}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert result.returncode == 0, result.stderr + result.stdout

    copied = pod.results / window_dir / "villin-amber14-vacuum-production.out"
    system_xml = pod.results / villin_inputs.campaign.system_xml
    for path in (copied, system_xml, copied.parent):
        assert path.stat().st_uid == POD_UID
        assert path.stat().st_mode & 0o200, f"{path} is not writable by its owner"
    # What the main container does with them, as the same user: append, replace, add files.
    main_step = (f'echo "1 2" >> "{copied}" && : > "{system_xml}" '
                 f'&& echo new > "{copied.parent}/villin-amber14-vacuum-production.chk"')
    written = subprocess.run([*user, "sh", "-c", main_step], capture_output=True, text=True)
    assert written.returncode == 0, written.stderr
    assert copied.read_text() == "#header\n1 2\n"


def test_no_chmod_anywhere_in_the_pod(make_pod, bucket):
    pod = make_pod()
    scripts = [(pod.repo / POD_SCRIPTS / name).read_text() for name in
               ("copy-in.sh", "lib.sh", "copy-out.sh", "run-job.sh", "pre-stop.sh")]
    commands = [" ".join(pod.command(c)) for c in ("init-git", "init-rclone", "main")]
    for text in scripts + commands + [" ".join(pod.prestop_command())]:
        code = [line.split("#")[0] for line in text.splitlines()]  # comments may say why there is none
        assert not [line for line in code if re.search(r"(?<![-\w])chmod\s", line)]
    context = pod.spec["securityContext"]
    assert context["runAsUser"] == context["runAsGroup"] == context["fsGroup"] == POD_UID
    assert not any("securityContext" in c and c["securityContext"].get("runAsUser") not in (None, POD_UID)
                   for c in pod.spec["initContainers"] + pod.spec["containers"])


def test_wrong_secret_key_fails_init_with_a_clear_message(make_pod, bucket, villin_inputs, s3):
    seed_inputs(bucket, villin_inputs)
    wrong = "WRONGsecretKEYthatIsRecognizable0123456789"
    pod = make_pod(secret_access_key=wrong)

    result = pod.run("init-rclone", PROTBENCH_TRANSFER_RETRY_SECONDS="30")  # a retry would time out

    assert result.returncode == 67
    assert "retrying" not in result.stdout
    assert "rejected the credentials of remote 'podtest'" in result.stderr
    assert "refresh the rclone config secret" in result.stderr
    assert not pod.results.exists() or not any(pod.results.rglob("*.xml"))
    for text in (result.stdout, result.stderr):
        assert wrong not in text and s3.secret_access_key not in text


def test_missing_bucket_fails_init_with_a_clear_message(make_pod):
    pod = make_pod(bucket_name="no-such-bucket-here")

    result = pod.run("init-rclone", PROTBENCH_TRANSFER_RETRY_SECONDS="30")  # a retry would time out

    assert result.returncode == 67
    assert "retrying" not in result.stdout
    assert "bucket 'no-such-bucket-here' does not exist on remote 'podtest'" in result.stderr
    assert "check BUCKET" in result.stderr


def test_unreachable_endpoint_is_retried_in_place_then_exits_75(make_pod, closed_port):
    pod = make_pod(endpoint=f"http://127.0.0.1:{closed_port}")

    started = time.monotonic()
    # one attempt per listing (rclone's SDK would back off seconds between 3): the tries are the script's
    result = pod.run("init-rclone", timeout=120, PROTBENCH_TRANSFER_TRIES="3",
                     PROTBENCH_TRANSFER_RETRY_SECONDS="0.2", RCLONE_LOW_LEVEL_RETRIES="1")

    assert result.returncode == 75
    assert "cannot reach the S3 endpoint of remote 'podtest' after 3 tries" in result.stderr
    assert "the Job tries again with a new pod" in result.stderr
    assert [line for line in result.stdout.splitlines() if "retrying in" in line] == [
        "copy-in: retrying in 0.2 s (listing bucket '" + pod.job.env["PROTBENCH_BUCKET"]
        + "' failed with rclone exit 5, try 1 of 3)",
        "copy-in: retrying in 0.4 s (listing bucket '" + pod.job.env["PROTBENCH_BUCKET"]
        + "' failed with rclone exit 5, try 2 of 3)"]
    assert time.monotonic() - started < 60


def test_an_endpoint_that_comes_back_during_the_retries_is_used(make_pod, bucket, villin_inputs, s3, closed_port):
    seed_inputs(bucket, villin_inputs)
    pod = make_pod(endpoint=f"http://127.0.0.1:{closed_port}")
    log = pod.home / "init.log"
    container = pod.start("init-rclone", log=log, PROTBENCH_TRANSFER_TRIES="5",
                          PROTBENCH_TRANSFER_RETRY_SECONDS="1", RCLONE_LOW_LEVEL_RETRIES="1")
    deadline = time.monotonic() + 60
    while "retrying in" not in log.read_text():
        assert time.monotonic() < deadline and container.process.poll() is None, log.read_text()
        time.sleep(0.05)
    s3.rclone_config(pod.rclone_config, REMOTE)  # the network is back

    assert container.wait(timeout=120) == 0, container.output()
    assert (pod.results / villin_inputs.campaign.system_xml).is_file()


@pytest.mark.parametrize("problem, expected", [
    ("no-config", "rclone config"),
    ("unknown-remote", "remote 'podtest' is not defined in"),
    ("no-bucket-variable", "PROTBENCH_BUCKET is empty"),
    ("escaping-entry", "entry '../../etc/' is not a relative path inside results/"),
])
def test_bad_environment_fails_init_naming_the_fix(make_pod, bucket, problem, expected):
    pod = make_pod()
    extra = {}
    if problem == "no-config":
        pod.rclone_config.unlink()
    elif problem == "unknown-remote":
        pod.rclone_config.write_text(pod.rclone_config.read_text().replace(f"[{REMOTE}]", "[other]"))
    elif problem == "no-bucket-variable":
        extra["PROTBENCH_BUCKET"] = ""
    else:
        extra["PROTBENCH_REQUIRED_FILES"] = "villin-amber14-vacuum/setup/\n../../etc/"

    result = pod.run("init-rclone", **extra)

    assert result.returncode == 2
    assert expected in result.stderr
