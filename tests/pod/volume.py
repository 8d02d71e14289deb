"""How many bytes a window's pod sends to the bucket over its life, measured by the server.

Shared by ``tests/pod/test_upload_volume.py`` and ``benchmarks/bench_upload_volume.py``.
The real window script runs; right after each production checkpoint it stops
itself (SIGSTOP, from the hook :data:`PAUSE_HOOK` adds), the pod's upload runs
(``copy-out.sh sync``), and it continues (SIGCONT): the most frequent sync a
pod could do. The bucket is versioned, so every upload leaves a version and
the bytes sent are the sizes of all versions under the window's directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: Real proportions at test size: 100 frames per checkpoint (the defaults are
#: 100 ps frames and 10 ns checkpoints), five checkpoints, one saved state.
REALISTIC_WINDOW = {
    "PROTBENCH_PLATFORM": "CPU",
    "PROTBENCH_EQUIL_LENGTH": "0.0001",
    "PROTBENCH_EQUIL_FRAME": "0.05",
    "PROTBENCH_PRODUCTION_LENGTH": "0.02",  # 500 frames of 10 steps of 4 fs
    "PROTBENCH_FRAME": "0.04",
    "PROTBENCH_CHECKPOINT": "4.0",  # 100 frames per checkpoint and DCD segment
    "PROTBENCH_SAVE_STATE": "20.0",
    "PROTBENCH_CHECKPOINT_MINUTES": "15",
}


@dataclass(frozen=True)
class UploadVolume:
    """Bytes sent and bytes kept for one window.

    Attributes
    ----------
    uploaded_bytes : int
        Sum of the sizes of every version the pod uploaded.
    final_bytes : int
        Sum of the sizes of the window's objects at the end.
    syncs : int
        Periodic uploads run (one per checkpoint seen).
    objects : int
        Objects of the window at the end.
    """

    uploaded_bytes: int
    final_bytes: int
    syncs: int
    objects: int

    @property
    def ratio(self) -> float:
        return self.uploaded_bytes / self.final_bytes


#: ``sitecustomize`` of the window's Python: after the portable checkpoint, written last at
#: every checkpoint, is renamed into place, the process stops itself until the upload is done.
#: Stopped by a watcher instead, it would run on for as long as the watcher took to notice (ms,
#: or more on a loaded machine) and start the next trajectory segment, which an upload would
#: then send half-written.
PAUSE_HOOK = """\
import os, signal

_marker = os.path.realpath(os.environ["PROTBENCH_TEST_PAUSE_AFTER"])
_replace = os.replace


def _replace_then_pause(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    if os.path.realpath(dst) == _marker:
        os.kill(os.getpid(), signal.SIGSTOP)


os.replace = _replace_then_pause
"""


def run_window_syncing_at_checkpoints(pod, files, settings: dict, log: Path, poll_s: float = 0.002,
                                      before_sync: Callable[[], None] | None = None,
                                      timeout_s: float = 600.0) -> int:
    """Run the pod's window script to the end with an upload after every checkpoint.

    Returns the number of periodic uploads; the final upload follows, as in run-job.sh.
    ``before_sync`` is called while the script is paused, before each periodic upload.
    ``timeout_s`` bounds the whole run (a ceiling for a loaded machine).

    Raises
    ------
    RuntimeError
        When the script or an upload fails (with its output), or the run outlasts ``timeout_s``.
    """
    script = pod.repo / pod.job.script_path
    hook = log.parent / f"{log.stem}-pause-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK)
    env = pod.env("main", **settings, PYTHONPATH=str(hook),
                  PROTBENCH_TEST_PAUSE_AFTER=str(pod.results / files.portable_checkpoint))
    syncs = 0
    deadline = time.monotonic() + timeout_s
    with open(log, "w") as handle:
        process = subprocess.Popen([str(script), "-o", str(pod.results)], env=env,
                                   stdout=handle, stderr=subprocess.STDOUT)
        try:
            while True:
                # WNOWAIT: an exit stays for Popen to collect; a stop is then taken from the queue below.
                event = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WSTOPPED | os.WNOHANG | os.WNOWAIT)
                if event is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the window script ran over {timeout_s:g} s:\n{log.read_text()}")
                    time.sleep(poll_s)
                    continue
                if event.si_code != os.CLD_STOPPED:
                    break
                os.waitid(os.P_PID, process.pid, os.WSTOPPED)
                try:
                    if before_sync is not None:
                        before_sync()
                    _upload(pod, "sync")
                finally:
                    process.send_signal(signal.SIGCONT)
                syncs += 1
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the window script failed ({process.returncode}):\n{log.read_text()}")
    _upload(pod, "final")
    return syncs


def _upload(pod, reason: str) -> None:
    result = pod.copy_out(reason)
    if result.returncode != 0:
        raise RuntimeError(f"copy-out.sh {reason} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def measure(bucket, files, syncs: int) -> UploadVolume:
    """Read the bytes sent and kept under the window's directory from the bucket's versions."""
    versions = bucket.versions(f"results/{files.directory}/")
    latest = [v for v in versions if v.latest]
    return UploadVolume(sum(v.size for v in versions), sum(v.size for v in latest), syncs, len(latest))
