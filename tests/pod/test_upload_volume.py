"""Upload volume over a window's life: segments go up once, so syncing often stays cheap."""

from __future__ import annotations

import pytest

from tests.pod.harness import seed_inputs
from tests.pod.volume import REALISTIC_WINDOW, measure, run_window_syncing_at_checkpoints

WINDOW = 7


@pytest.mark.slow
def test_syncing_after_every_checkpoint_sends_at_most_a_quarter_more(make_pod, bucket, villin_inputs, tmp_path):
    seed_inputs(bucket, villin_inputs)
    files = villin_inputs.campaign.window_files(1, WINDOW)
    pod = make_pod(window=WINDOW)
    assert pod.run("init-rclone").returncode == 0

    syncs = run_window_syncing_at_checkpoints(pod, files, REALISTIC_WINDOW, tmp_path / "window.log")
    volume = measure(bucket, files, syncs)

    assert syncs == 6  # one upload right after the checkpoint that starts production and each of its five
    # the bucket ends with exactly the pod's outputs
    local = {p.name: p.stat().st_size for p in (pod.results / files.directory).iterdir() if p.is_file()}
    latest = bucket.latest(f"results/{files.directory}/")
    assert {key.rsplit("/", 1)[1]: size for key, size in latest.items()} == local
    assert volume.ratio <= 1.25, f"uploaded {volume.uploaded_bytes} bytes for {volume.final_bytes} kept"
    # each finished trajectory segment went up exactly once
    counts = bucket.version_counts(f"results/{files.directory}/")
    segments = {k: n for k, n in counts.items() if "-production-segment-" in k}
    assert len(segments) == 5 and set(segments.values()) == {1}
