"""Preflight: the launcher's look into the bucket before it applies anything."""

from __future__ import annotations

import time

import pytest

from protbench_nrp.preflight import MissingInput, PreflightError, preflight
from tests.pod.harness import REMOTE, campaign_config, seed_inputs

STEERED = "umbrella-scripts/run-steered-md.py"
SETUP = "umbrella-scripts/setup-umbrella-system.py"


def _jobs(bucket_name: str, stage: str = "window", replicas=(1,), windows=(0,)):
    from protbench_nrp.jobs import build_jobs

    config = campaign_config(bucket_name, stage, replicas, windows)
    return build_jobs(config, commit="0" * 40), config


@pytest.fixture
def user_config(s3, tmp_path):
    """The rclone config, downloaded where the README puts it."""
    return s3.rclone_config(tmp_path / "home" / ".config" / "rclone" / "rclone.conf", REMOTE)


@pytest.fixture
def environ(user_config, tmp_path):
    """A user's environment: no RCLONE_CONFIG, no AWS variables; rclone's default config place."""
    return {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}


def _check(bucket_name, environ, **selection):
    jobs, config = _jobs(bucket_name, **selection)
    preflight(jobs, config, environ)


def test_complete_inputs_pass(bucket, villin_inputs, environ):
    seed_inputs(bucket, villin_inputs)
    _check(bucket.name, environ, windows=range(31))


def test_exactly_the_missing_inputs_are_listed_with_their_producer(bucket, villin_inputs, environ):
    campaign = villin_inputs.campaign
    bucket.put_tree(villin_inputs.root, str(campaign.setup_dir))
    bucket.put_tree(villin_inputs.root, str(campaign.steered_state(1)))
    for window in (0, 1, 3):
        bucket.put_tree(villin_inputs.root, str(campaign.window_pdb(1, window)))
    # replica 2's steered MD never ran
    with pytest.raises(PreflightError) as caught:
        _check(bucket.name, environ, replicas=(1, 2), windows=(0, 1, 2, 3))

    assert caught.value.missing == [
        MissingInput(str(campaign.window_pdb(1, 2)), "steered", 1),
        MissingInput(str(campaign.steered_state(2)), "steered", 2),
        MissingInput(str(campaign.window_pdb(2, 0)), "steered", 2),
        MissingInput(str(campaign.window_pdb(2, 1)), "steered", 2),
        MissingInput(str(campaign.window_pdb(2, 2)), "steered", 2),
        MissingInput(str(campaign.window_pdb(2, 3)), "steered", 2),
    ]
    message = str(caught.value)
    assert f"{campaign.window_pdb(1, 2)} is missing: written by steered MD of replica 1 ({STEERED})" in message
    assert "launch STAGE = 'steered' with REPLICAS = (2,) first" in message
    assert "lacks 6 input(s)" in message and "Nothing was applied." in message
    assert str(campaign.window_pdb(1, 3)) not in message


def test_empty_bucket_lists_the_setup_once(bucket, environ, villin_inputs):
    campaign = villin_inputs.campaign
    with pytest.raises(PreflightError) as caught:
        _check(bucket.name, environ, stage="steered", replicas=(1, 2))
    assert caught.value.missing == [MissingInput(f"{campaign.setup_dir}/", "setup")]
    assert f"{campaign.setup_dir}/ is missing or empty: written by the setup stage ({SETUP})" in str(caught.value)


def test_an_empty_input_file_counts_as_missing(bucket, villin_inputs, environ, tmp_path):
    seed_inputs(bucket, villin_inputs)
    pdb = villin_inputs.campaign.window_pdb(1, 4)
    bucket.client.put_object(Bucket=bucket.name, Key=f"results/{pdb}", Body=b"")
    with pytest.raises(PreflightError) as caught:
        _check(bucket.name, environ, windows=(3, 4))
    assert [m.path for m in caught.value.missing] == [str(pdb)]


@pytest.mark.parametrize("arrange", ["only the minimized structure", "an empty System"])
def test_an_incomplete_setup_is_missing_as_the_stage_table_says(bucket, villin_inputs, environ, arrange):
    campaign = villin_inputs.campaign
    if arrange == "only the minimized structure":
        bucket.put_tree(villin_inputs.root, str(campaign.minimized_pdb))
        lacking = [campaign.contacts_file.name, campaign.system_xml.name]
    else:
        bucket.put_tree(villin_inputs.root, str(campaign.setup_dir))
        bucket.client.put_object(Bucket=bucket.name, Key=f"results/{campaign.system_xml}", Body=b"")
        lacking = [campaign.system_xml.name]
    with pytest.raises(PreflightError) as caught:
        _check(bucket.name, environ, stage="steered", replicas=(1, 2))
    assert caught.value.missing == [MissingInput(f"{campaign.setup_dir}/", "setup")]
    message = str(caught.value)
    assert f"{campaign.setup_dir}/ is incomplete (setup is not done: " in message
    assert all(name in message for name in lacking), message
    assert f"written by the setup stage ({SETUP}); launch STAGE = 'setup' first" in message


def test_setup_needs_nothing_but_a_bucket(bucket, environ):
    _check(bucket.name, environ, stage="setup")


def test_unreachable_endpoint_is_a_clear_error_in_seconds(bucket, s3, tmp_path, closed_port):
    config = s3.rclone_config(tmp_path / "rclone.conf", REMOTE, endpoint=f"http://127.0.0.1:{closed_port}")
    started = time.monotonic()
    with pytest.raises(PreflightError) as caught:
        _check(bucket.name, {"RCLONE_CONFIG": str(config)})
    assert time.monotonic() - started < 30
    assert "cannot reach the S3 endpoint http://127.0.0.1:" in str(caught.value)
    assert f"rclone remote '{REMOTE}' in {config}" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_wrong_bucket_is_a_clear_error(environ):
    with pytest.raises(PreflightError) as caught:
        _check("no-such-bucket-anywhere", environ)
    assert "bucket 'no-such-bucket-anywhere'" in str(caught.value)
    assert "does not exist; check BUCKET" in str(caught.value)


def test_rejected_credentials_are_a_clear_error_without_the_secret(bucket, s3, tmp_path):
    wrong = "ThisIsTheWrongSecretKeyAndItMustNotLeak00"
    config = s3.rclone_config(tmp_path / "rclone.conf", REMOTE, secret_access_key=wrong)
    with pytest.raises(PreflightError) as caught:
        _check(bucket.name, {"RCLONE_CONFIG": str(config)})
    assert "refused the credentials" in str(caught.value)
    assert wrong not in str(caught.value) and s3.secret_access_key not in str(caught.value)


def test_aws_variables_serve_when_there_is_no_rclone_config(bucket, villin_inputs, s3, tmp_path):
    seed_inputs(bucket, villin_inputs)
    environ = {"HOME": str(tmp_path / "nobody"), "AWS_ACCESS_KEY_ID": s3.access_key_id,
               "AWS_SECRET_ACCESS_KEY": s3.secret_access_key, "AWS_ENDPOINT_URL": s3.endpoint}
    _check(bucket.name, environ, windows=(0, 30))
    with pytest.raises(PreflightError) as caught:
        _check(bucket.name, {**environ, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert "from the AWS_* environment variables" in str(caught.value)


@pytest.mark.parametrize("config_text, expected", [
    (None, "has no remote 'podtest'"),
    ("[other]\ntype = s3\n", "has no remote 'podtest'"),
    (f"[{REMOTE}]\ntype = drive\n", "is of type 'drive', not s3"),
    ("# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\nabc\n", "is encrypted"),
    ("this is not an ini file\n", "is not an rclone config"),
])
def test_unusable_credentials_name_the_fix(bucket, tmp_path, config_text, expected):
    path = tmp_path / "rclone.conf"
    if config_text is not None:
        path.write_text(config_text)
    with pytest.raises(PreflightError) as caught:
        _check(bucket.name, {"RCLONE_CONFIG": str(path), "HOME": str(tmp_path)})
    assert expected in str(caught.value)


def test_the_launcher_refuses_with_the_list(bucket, villin_inputs, user_config, monkeypatch):
    from protbench_nrp.jobs import LaunchRefused
    from protbench_nrp.launcher import run_preflight

    bucket.put_tree(villin_inputs.root, str(villin_inputs.campaign.setup_dir))
    monkeypatch.setenv("RCLONE_CONFIG", str(user_config))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    jobs, config = _jobs(bucket.name, windows=(5,))
    with pytest.raises(LaunchRefused) as caught:
        run_preflight(jobs, config)
    assert str(caught.value).startswith("preflight failed:")
    assert str(villin_inputs.campaign.window_pdb(1, 5)) in str(caught.value)
