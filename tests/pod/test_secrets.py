"""No credential in a manifest, a log line, the pod's bookkeeping or the bucket.

The pod's whole data flow runs (init, a stand-in script with periodic
uploads, preStop, final upload), then the failure paths with a recognizable
wrong secret; every output, every file the pod left and every object in the
bucket are searched for both secrets.
"""

from __future__ import annotations

import signal
import time

import pytest

from protbench_nrp.manifest import to_yaml
from protbench_nrp.preflight import PreflightError, preflight
from tests.pod.harness import REMOTE, campaign_config, make_fake_repo, seed_inputs

RECOGNIZABLE = "PROTBENCH-RECOGNIZABLE-SECRET-0123456789abcdef"


def _all_text(paths) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in paths if p.is_file())


def test_no_secret_leaves_the_secret_file(make_pod, bucket, villin_inputs, s3, tmp_path):
    seed_inputs(bucket, villin_inputs)
    pod = make_pod(window=9)
    pod.repo = make_fake_repo(tmp_path / "repo", pod.job.script_path)
    env = {"FAKE_OUTPUT_DIR": pod.output_files[0].rstrip("/"), "FAKE_FRAMES": "100000",
           "PROTBENCH_SYNC_MINUTES": "0.003"}

    assert pod.run("init-rclone").returncode == 0
    main = pod.start("main", **env)
    reporter = f"results/{pod.output_files[0]}fake-production.out"
    deadline = time.monotonic() + 120
    while bucket.version_counts().get(reporter, 0) < 2:  # a few periodic uploads
        assert time.monotonic() < deadline and main.process.poll() is None, main.output()
        time.sleep(0.05)
    assert pod.run_prestop(**env).returncode == 0
    main.signal(signal.SIGTERM)
    assert main.wait(timeout=60) == 143

    # the failure paths, with a recognizable wrong secret
    pod.rclone_config.write_text(pod.rclone_config.read_text().replace(s3.secret_access_key, RECOGNIZABLE))
    assert pod.run("init-rclone").returncode == 67  # credentials rejected
    (pod.results / pod.output_files[0] / "new-output.txt").write_text("changed\n")
    assert pod.copy_out("final").returncode == 67
    jobs = [pod.job]
    with pytest.raises(PreflightError) as caught:
        preflight(jobs, campaign_config(bucket.name, windows=(9,)), {"RCLONE_CONFIG": str(pod.rclone_config)})

    searched = {
        "outputs": "\n".join(pod.transcript) + str(caught.value),
        "manifest": to_yaml(pod.manifest),
        "pod files": _all_text((pod.results / ".protbench-pod").rglob("*")),
        "results": _all_text(pod.results.rglob("*")),
        "bucket": "\n".join(bucket.read(key).decode("utf-8", "replace") for key in bucket.latest()),
    }
    assert "uploaded" in searched["outputs"] and "rejected the credentials" in searched["outputs"]
    for where, text in searched.items():
        for secret in (s3.secret_access_key, RECOGNIZABLE):
            assert secret not in text, f"a secret key appears in the {where}"
    # the manifest names the secret holding the config, never its content
    assert "secretName: pod-test-rclone" in searched["manifest"]
    assert s3.access_key_id not in searched["manifest"]
    assert REMOTE in searched["manifest"]
