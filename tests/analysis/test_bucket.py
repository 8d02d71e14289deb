"""Analysis straight from the S3 bucket (moto's server on loopback), fetching CV and parameter files only."""

from __future__ import annotations

import boto3
import numpy as np
from click.testing import CliRunner

from protbench_nrp.analysis import analyze_campaign, load_campaign
from protbench_nrp.analysis_cli import build_command
from protbench_nrp.store import BucketStore, LocalStore

from .conftest import CHEAP, upload_tree

BUCKET = "protbench-results"


def filled_bucket(url, synthetic, replica=1):
    """One replica of the synthetic campaign under ``results/``, with a trajectory segment per
    window that analysis must not fetch."""
    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket=BUCKET)
    campaign = synthetic.campaign
    upload_tree(client, BUCKET, synthetic.root / campaign.replica_dir(replica),
                prefix=f"results/{campaign.replica_dir(replica)}")
    for window in range(len(synthetic.centres)):
        segment = campaign.window_files(replica, window).production_segment(0)
        client.put_object(Bucket=BUCKET, Key=f"results/{segment}", Body=b"\0" * 4096)
    return client


def test_only_cv_and_parameter_objects_are_fetched(s3_server, synthetic):
    client = filled_bucket(s3_server, synthetic)
    fetched = []
    client.meta.events.register("before-parameter-build.s3.GetObject",
                                lambda params, **_: fetched.append(params["Key"]))
    from_bucket = analyze_campaign(load_campaign(BucketStore(client, BUCKET), synthetic.campaign), **CHEAP)
    campaign = synthetic.campaign
    expected = {f"results/{path}" for window in range(len(synthetic.centres))
                for path in (campaign.window_files(1, window).cv_timeseries,
                             campaign.window_files(1, window).parameters)}
    assert sorted(fetched) == sorted(expected)

    local = analyze_campaign(load_campaign(LocalStore(synthetic.root), campaign, replicas=(1,)), **CHEAP)
    np.testing.assert_array_equal(from_bucket.combined.pmf_kcal_per_mol, local.combined.pmf_kcal_per_mol)
    np.testing.assert_array_equal(from_bucket.combined.uncertainty_kcal_per_mol,
                                  local.combined.uncertainty_kcal_per_mol)


def test_command_reads_the_bucket_and_writes_locally(s3_server, synthetic_results, tmp_path):
    filled_bucket(s3_server, synthetic_results)
    campaign = synthetic_results.campaign
    out = tmp_path / "out"
    # Endpoint and keys come from the standard AWS variables the fixture set.
    result = CliRunner().invoke(build_command(), [
        "-o", str(out), "--target", campaign.target, "--ff", campaign.ff, "--bucket", BUCKET])
    assert result.exit_code == 0, result.output
    assert f"wrote {out / campaign.pmf_csv}" in result.stdout
    local = CliRunner().invoke(build_command(), [
        "-o", str(synthetic_results.root), "--target", campaign.target, "--ff", campaign.ff,
        "--replica", "1"])
    assert local.exit_code == 0, local.output
    assert (out / campaign.pmf_csv).read_text() == (synthetic_results.root / campaign.pmf_csv).read_text()
    assert not (out / campaign.window_dir(1, 0)).exists()  # nothing else was copied down


def test_a_missing_bucket_is_an_error_naming_it_and_the_settings(s3_server, tmp_path):
    result = CliRunner().invoke(build_command(), [
        "-o", str(tmp_path), "--target", "toy", "--ff", "ff", "--bucket", "no-such-bucket"])
    assert result.exit_code == 1
    assert "cannot read s3://no-such-bucket/results" in result.stderr
    assert "NoSuchBucket" in result.stderr
    assert "AWS_ENDPOINT_URL" in result.stderr and "AWS_ACCESS_KEY_ID" in result.stderr


def test_an_unreachable_endpoint_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "no-rclone.conf"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = CliRunner().invoke(build_command(), [
        "-o", str(tmp_path), "--target", "toy", "--ff", "ff", "--bucket", BUCKET,
        "--endpoint-url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert f"cannot read s3://{BUCKET}/results" in result.stderr
    assert "127.0.0.1:9" in result.stderr


def test_a_wrong_prefix_finds_no_campaign(s3_server, synthetic, tmp_path):
    filled_bucket(s3_server, synthetic)
    campaign = synthetic.campaign
    result = CliRunner().invoke(build_command(), [
        "-o", str(tmp_path), "--target", campaign.target, "--ff", campaign.ff, "--bucket", BUCKET,
        "--bucket-prefix", "elsewhere"])
    assert result.exit_code == 1
    assert f"no replica directories under s3://{BUCKET}/elsewhere/{campaign.name}" in result.stderr


def test_keys_and_endpoint_come_from_the_rclone_config_like_preflight(s3_server, synthetic, tmp_path,
                                                                      monkeypatch):
    filled_bucket(s3_server, synthetic)
    config = tmp_path / "rclone.conf"
    config.write_text(f"[nrp]\ntype = s3\nprovider = Other\naccess_key_id = protbench-test\n"
                      f"secret_access_key = protbench-test-secret\nendpoint = {s3_server}\n")
    monkeypatch.setenv("RCLONE_CONFIG", str(config))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    campaign = synthetic.campaign
    result = CliRunner().invoke(build_command(), [
        "-o", str(tmp_path / "out"), "--target", campaign.target, "--ff", campaign.ff,
        "--bucket", BUCKET, "--rclone-remote", "nrp"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / campaign.pmf_csv).is_file()


def test_no_credentials_is_an_error_saying_where_they_are_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "no-rclone.conf"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(build_command(), [
        "-o", str(tmp_path), "--target", "toy", "--ff", "ff", "--bucket", BUCKET])
    assert result.exit_code == 1
    assert "no credentials for the bucket" in result.stderr
    assert "no-rclone.conf has no remote 'nrp'" in result.stderr
    assert "--skip-preflight" not in result.stderr
