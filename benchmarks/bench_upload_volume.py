#!/usr/bin/env python3
"""Bytes a window's pod uploads over its life, relative to the bytes it leaves in the bucket.

Runs the real window script (villin, CPU) against a local S3 server (moto on
127.0.0.1) and real rclone, with an upload (copy-out.sh sync) after every
checkpoint, the most frequent sync a pod could do, then the final upload.
The bucket is versioned, so the bytes sent are read from the server.

Prints, for several checkpoint intervals, the ratio uploaded / final, and for
comparison what re-sending one growing trajectory file at every sync would
have cost. Usage: ``make bench`` or ``.venv/bin/python benchmarks/bench_upload_volume.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for entry in (REPO_ROOT, REPO_ROOT / "umbrella-scripts"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

from tests.conftest import _write_villin_inputs  # noqa: E402
from tests.pod.harness import REMOTE, Pod, render_job, seed_inputs  # noqa: E402
from tests.pod.s3server import Bucket, MotoServer  # noqa: E402
from tests.pod.volume import REALISTIC_WINDOW, measure, run_window_syncing_at_checkpoints  # noqa: E402

#: (label, frames per checkpoint) of the runs; 100 is the defaults' proportion.
INTERVALS = (("100 frames per checkpoint (defaults' proportion)", 100),
             ("50 frames per checkpoint", 50),
             ("20 frames per checkpoint", 20))
FRAME_PS = float(REALISTIC_WINDOW["PROTBENCH_FRAME"])
CHECKPOINTS = 5


def settings_for(frames_per_checkpoint: int) -> dict[str, str]:
    checkpoint_ps = frames_per_checkpoint * FRAME_PS
    length_ns = CHECKPOINTS * checkpoint_ps / 1000.0
    return {**REALISTIC_WINDOW, "PROTBENCH_CHECKPOINT": f"{checkpoint_ps:g}",
            "PROTBENCH_PRODUCTION_LENGTH": f"{length_ns:g}", "PROTBENCH_SAVE_STATE": f"{length_ns * 1000:g}"}


def one_run(server: MotoServer, inputs, work: Path, index: int, settings: dict[str, str]):
    bucket = Bucket(server, f"bench-upload-{index}").create()
    seed_inputs(bucket, inputs)
    base = work / f"run-{index}"
    (base / "home").mkdir(parents=True)
    manifest, job = render_job(bucket.name, "window", 1, 0)
    config = server.rclone_config(base / "rclone.conf", REMOTE)
    pod = Pod(manifest, job, base / "results", REPO_ROOT, config, base / "home")
    if pod.run("init-rclone").returncode != 0:
        raise SystemExit("the init container failed; see the moto server log")
    files = inputs.campaign.window_files(1, 0)
    directory = pod.results / files.directory

    def trajectory_bytes() -> int:
        return sum(p.stat().st_size for p in directory.glob(files.production_segment_glob))

    at_syncs: list[int] = []
    syncs = run_window_syncing_at_checkpoints(pod, files, settings, base / "window.log",
                                              before_sync=lambda: at_syncs.append(trajectory_bytes()))
    volume = measure(bucket, files, syncs)
    # one growing file instead of segments would be sent whole at every sync and at the end
    whole_file = sum(at_syncs) + trajectory_bytes()
    return volume, whole_file, trajectory_bytes()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    server = MotoServer(work / "moto_server.log").start()
    try:
        (work / "inputs").mkdir()
        inputs = _write_villin_inputs(work / "inputs", n_windows=1)
        print(f"villin ({inputs.campaign.ff}), CPU, {CHECKPOINTS} checkpoints, an upload after each")
        for index, (label, frames) in enumerate(INTERVALS):
            volume, whole_file, trajectory = one_run(server, inputs, work, index, settings_for(frames))
            print(f"{label}:")
            print(f"  uploaded {volume.uploaded_bytes:>10,d} B for {volume.final_bytes:,d} B kept "
                  f"({volume.objects} objects, {volume.syncs} syncs + final): ratio {volume.ratio:.3f}")
            print(f"  trajectory {trajectory:,d} B; one growing DCD re-sent at every sync would "
                  f"send {whole_file:,d} B of trajectory alone ({whole_file / trajectory:.2f}x)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
