"""The results store: one tree, the same answers from a results root and from the bucket.

The bucket is moto's S3 server on loopback with signature checks on
(:mod:`tests.pod.s3server`), reached through :mod:`protbench_nrp.s3` as the
tools reach it.
"""

from __future__ import annotations

import itertools
import os
from pathlib import PurePosixPath

import pytest

from protbench_nrp.s3 import S3Access, S3AccessError, bucket_client, s3_access
from protbench_nrp.store import BucketStore, LocalStore, StoreError
from tests.pod.s3server import Bucket, MotoServer

#: A small results tree: files at two depths, an empty file, and a directory
#: whose contents a listing of its parent must not show.
TREE = {
    "villin-ff/setup/villin-ff-umbrella-openmm-system.xml": b"<System/>\n",
    "villin-ff/replica-1/villin-ff-equilibration-1.xml": b"<State/>\n",
    "villin-ff/replica-1/villin-ff-window-00.pdb": b"ATOM\n",
    "villin-ff/replica-1/villin-ff-window-01.pdb": b"",
    "villin-ff/replica-1/window-00/villin-ff-progress.json": b'{"phase": "production"}\n',
    "villin-ff/replica-1/window-00/segments/villin-ff-production-0000.dcd": b"\0" * 64,
}
REPLICA = PurePosixPath("villin-ff/replica-1")

_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto_server.log").start()
    yield server
    server.stop()


@pytest.fixture
def bucket(server) -> Bucket:
    return Bucket(server, f"store-test-{os.getpid()}-{next(_numbers)}").create()


def access(server, *, secret: str | None = None, endpoint: str | None = None) -> S3Access:
    return S3Access(endpoint or server.endpoint, server.access_key_id, secret or server.secret_access_key,
                    "us-east-1", "the test's key pair")


def local_store(tmp_path, server, bucket) -> LocalStore:
    for relative, data in TREE.items():
        path = tmp_path / "results" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return LocalStore(tmp_path / "results")


def bucket_store(tmp_path, server, bucket) -> BucketStore:
    for relative, data in TREE.items():
        bucket.client.put_object(Bucket=bucket.name, Key=f"results/{relative}", Body=data)
    return BucketStore(access(server).client(), bucket.name)


@pytest.fixture(params=[local_store, bucket_store], ids=["local", "bucket"])
def store(request, tmp_path, server, bucket):
    return request.param(tmp_path, server, bucket)


# -- the same answers wherever the tree lives -------------------------------------------------------


def test_a_file_reads_as_its_text_and_an_absent_one_as_none(store):
    assert store.read_text("villin-ff/replica-1/window-00/villin-ff-progress.json") == '{"phase": "production"}\n'
    assert store.read_text(REPLICA / "villin-ff-window-01.pdb") == ""
    assert store.read_text("villin-ff/replica-2/villin-ff-window-00.pdb") is None
    assert store.read_text("no-such-campaign/setup/x.xml") is None


@pytest.mark.parametrize("relative, present", [
    ("villin-ff/setup/villin-ff-umbrella-openmm-system.xml", True),
    ("villin-ff/replica-1/villin-ff-window-01.pdb", True),       # empty, but there
    ("villin-ff/replica-1/villin-ff-window-02.pdb", False),
    ("villin-ff/setup/villin-ff-umbrella-openmm-system", False),  # a prefix of a key is not a file
    ("villin-ff/replica-1/window-00", False),                     # a directory is not a file
    ("villin-ff/replica-1", False),
])
def test_exists_answers_for_files_only(store, relative, present):
    assert store.exists(relative) is present


def test_a_listing_names_files_and_directories_one_level_deep_sorted(store):
    assert store.list(REPLICA) == ["villin-ff-equilibration-1.xml", "villin-ff-window-00.pdb",
                                   "villin-ff-window-01.pdb", "window-00"]
    assert store.list("villin-ff/replica-1/window-00") == ["segments", "villin-ff-progress.json"]
    assert store.list("villin-ff") == ["replica-1", "setup"]
    assert store.list("") == ["villin-ff"]


@pytest.mark.parametrize("directory", ["villin-ff/replica-2", "nothing-here", "villin-ff/setup/"
                                       "villin-ff-umbrella-openmm-system.xml"])
def test_an_absent_directory_lists_as_empty(store, directory):
    assert store.list(directory) == []
    assert store.sizes(directory) == {}


def test_sizes_are_of_the_files_directly_in_a_directory(store):
    assert store.sizes(REPLICA) == {"villin-ff-equilibration-1.xml": 9, "villin-ff-window-00.pdb": 5,
                                    "villin-ff-window-01.pdb": 0}


def test_places_are_described_as_the_user_finds_them(tmp_path, server, bucket):
    local = LocalStore(tmp_path / "results")
    assert local.describe(REPLICA / "x.pdb") == str(tmp_path / "results" / "villin-ff" / "replica-1" / "x.pdb")
    assert local.location == f"results in {tmp_path / 'results'}"
    remote = BucketStore(None, "my-bucket", "results/")
    assert remote.describe(REPLICA / "x.pdb") == "s3://my-bucket/results/villin-ff/replica-1/x.pdb"
    assert remote.location == "results in s3://my-bucket/results"
    assert BucketStore(None, "my-bucket", "").describe("a/b") == "s3://my-bucket/a/b"


def test_another_prefix_is_another_results_root(server, bucket):
    bucket.client.put_object(Bucket=bucket.name, Key="elsewhere/villin-ff/setup/a.xml", Body=b"a")
    elsewhere = BucketStore(access(server).client(), bucket.name, "elsewhere")
    assert elsewhere.list("villin-ff/setup") == ["a.xml"] and elsewhere.read_text("villin-ff/setup/a.xml") == "a"
    assert BucketStore(access(server).client(), bucket.name).list("villin-ff/setup") == []


# -- what cannot be read ----------------------------------------------------------------------------


def test_a_local_directory_or_undecodable_file_is_an_error_naming_it(tmp_path):
    root = tmp_path / "results"
    (root / "villin-ff" / "window-00").mkdir(parents=True)
    (root / "villin-ff" / "binary.json").write_bytes(b"\xff\xfe\x00")
    store = LocalStore(root)
    with pytest.raises(StoreError) as caught:
        store.read_text("villin-ff/window-00")
    assert f"cannot read {root / 'villin-ff' / 'window-00'}" in str(caught.value)
    with pytest.raises(StoreError) as caught:
        store.read_text("villin-ff/binary.json")
    assert f"cannot read {root / 'villin-ff' / 'binary.json'}" in str(caught.value)
    assert "readable text file" in str(caught.value)


@pytest.mark.parametrize("ask", [
    lambda store: store.read_text("villin-ff/replica-1/villin-ff-window-00.pdb"),
    lambda store: store.exists("villin-ff/replica-1/villin-ff-window-00.pdb"),
    lambda store: store.list("villin-ff/replica-1/villin-ff-window-00.pdb"),
    lambda store: store.sizes("villin-ff/replica-1/villin-ff-window-00.pdb"),
], ids=["read_text", "exists", "list", "sizes"])
def test_an_unreachable_endpoint_is_an_error_naming_the_place_and_the_fix(server, ask, closed_port):
    endpoint = f"http://127.0.0.1:{closed_port}"
    store = BucketStore(access(server, endpoint=endpoint).client(), "some-bucket")
    with pytest.raises(StoreError) as caught:
        ask(store)
    message = str(caught.value)
    assert message.startswith("cannot read s3://some-bucket/results/villin-ff/replica-1/villin-ff-window-00.pdb: ")
    assert endpoint in message
    assert "Check the bucket name (BUCKET, --bucket), the endpoint and the keys" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("ask", [
    lambda store: store.read_text("villin-ff/setup/a.xml"),
    lambda store: store.exists("villin-ff/setup/a.xml"),
    lambda store: store.list("villin-ff/setup"),
], ids=["read_text", "exists", "list"])
def test_a_missing_bucket_is_an_error_not_an_absent_file(server, ask):
    store = BucketStore(access(server).client(), "no-such-bucket-here")
    with pytest.raises(StoreError) as caught:
        ask(store)
    assert "cannot read s3://no-such-bucket-here/results/villin-ff/setup" in str(caught.value)
    assert "NoSuchBucket" in str(caught.value)


def test_rejected_keys_are_an_error_without_the_secret(server, bucket):
    wrong = "ThisIsTheWrongSecretKeyAndItMustNotLeak00"
    store = BucketStore(access(server, secret=wrong).client(), bucket.name)
    with pytest.raises(StoreError) as caught:
        store.read_text("villin-ff/setup/a.xml")
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert wrong not in str(caught.value) and server.secret_access_key not in str(caught.value)


# -- writing a report -----------------------------------------------------------------------------


def test_a_report_is_written_with_its_content_type(server, bucket):
    store = BucketStore(access(server).client(), bucket.name)
    store.write_bytes("villin-ff/analysis/villin-ff-report.html", b"<html></html>", "text/html; charset=utf-8")
    uploaded = bucket.client.get_object(Bucket=bucket.name, Key="results/villin-ff/analysis/villin-ff-report.html")
    assert uploaded["Body"].read() == b"<html></html>"
    assert uploaded["ContentType"] == "text/html; charset=utf-8"
    assert store.read_text("villin-ff/analysis/villin-ff-report.html") == "<html></html>"


def test_a_report_that_cannot_be_written_says_where(server):
    store = BucketStore(access(server).client(), "no-such-bucket-here")
    with pytest.raises(StoreError) as caught:
        store.write_bytes("villin-ff/analysis/r.html", b"x", "text/html")
    assert str(caught.value).startswith("cannot write s3://no-such-bucket-here/results/villin-ff/analysis/r.html: ")


# -- credentials (protbench_nrp.s3) ------------------------------------------------------------------


def test_the_rclone_remote_gives_keys_and_endpoint_and_the_client_reads_the_bucket(server, bucket, tmp_path):
    config = server.rclone_config(tmp_path / "rclone.conf", "nrp")
    environ = {"RCLONE_CONFIG": str(config), "AWS_ENDPOINT_URL": "http://elsewhere.invalid"}
    found = s3_access("nrp", environ)
    assert (found.endpoint_url, found.source) == (server.endpoint, f"rclone remote 'nrp' in {config}")
    assert server.secret_access_key not in repr(found)
    bucket.client.put_object(Bucket=bucket.name, Key="results/villin-ff/setup/a.xml", Body=b"a")
    store = BucketStore(bucket_client(rclone_remote="nrp", environ=environ), bucket.name)
    assert store.list("villin-ff/setup") == ["a.xml"]


def test_the_endpoint_given_wins_over_the_rclone_config(server, tmp_path):
    config = server.rclone_config(tmp_path / "rclone.conf", "nrp")
    client = bucket_client("http://127.0.0.1:9", "nrp", {"RCLONE_CONFIG": str(config)})
    assert client.meta.endpoint_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("other_fix, ending", [
    ("", "or set RCLONE_CONFIG to it"),
    ("launch with --skip-preflight", "or set RCLONE_CONFIG to it, or launch with --skip-preflight"),
])
def test_without_credentials_the_message_offers_the_callers_way_round(tmp_path, other_fix, ending):
    environ = {"RCLONE_CONFIG": str(tmp_path / "absent.conf")}
    with pytest.raises(S3AccessError) as caught:
        s3_access("nrp", environ, other_fix=other_fix)
    message = str(caught.value)
    assert message.startswith(f"no credentials for the bucket: {tmp_path / 'absent.conf'} has no remote 'nrp'")
    assert message.endswith(ending)
    assert ("--skip-preflight" in message) == bool(other_fix)


@pytest.mark.parametrize("other_fix", ["", "launch with --skip-preflight"])
def test_an_encrypted_rclone_config_names_the_variables_instead(tmp_path, other_fix):
    config = tmp_path / "rclone.conf"
    config.write_text("# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\nabc\n")
    with pytest.raises(S3AccessError) as caught:
        s3_access("nrp", {"RCLONE_CONFIG": str(config)}, other_fix=other_fix)
    message = str(caught.value)
    assert f"the rclone config {config} is encrypted" in message
    assert "set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL instead" in message
    assert message.endswith(f", or {other_fix}") if other_fix else "--skip-preflight" not in message


def test_a_malformed_endpoint_is_refused_naming_its_source():
    bad = S3Access("http://bad host:99999", "k", "s", "us-east-1", "rclone remote 'nrp' in rclone.conf")
    with pytest.raises(S3AccessError) as caught:
        bad.client()
    assert "cannot use the S3 endpoint 'http://bad host:99999' from rclone remote 'nrp' in rclone.conf" \
        in str(caught.value)
    assert "set it to a URL such as https://host.example.org" in str(caught.value)


def test_an_undecodable_object_in_the_bucket_is_an_error_naming_it_not_the_keys(server, bucket):
    server.client().put_object(Bucket=bucket.name, Key="results/villin-ff/binary.json", Body=b"\xff\xfe\x00")
    store = BucketStore(server.client(), bucket.name)
    with pytest.raises(StoreError) as caught:
        store.read_text("villin-ff/binary.json")
    message = str(caught.value)
    assert f"cannot read s3://{bucket.name}/results/villin-ff/binary.json: it is not UTF-8 text" in message
    assert "remove or replace it" in message and "keys" not in message


@pytest.mark.parametrize("other_fix", ["", "launch with --skip-preflight"])
def test_an_unreadable_rclone_config_says_how_to_replace_it(tmp_path, other_fix):
    config = tmp_path / "rclone.conf"
    config.write_bytes(b"[nrp]\ntype = s3\n\xff\xfe\n")
    with pytest.raises(S3AccessError) as caught:
        s3_access("nrp", {"RCLONE_CONFIG": str(config)}, other_fix=other_fix)
    message = str(caught.value)
    assert message.startswith(f"cannot read the rclone config {config}: ")
    assert "point RCLONE_CONFIG at one" in message
    assert message.endswith(f", or {other_fix}") if other_fix else "--skip-preflight" not in message
