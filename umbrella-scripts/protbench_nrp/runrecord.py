"""The run record of one pod: who ran a Job's script, where, with what, and how it ended.

run-job.sh (PID 1 of the main container) runs this file:

``start``
    when the pod starts, after proteinbenchmark is installed: pod and node
    (downward API), GPU model and driver, OpenMM version, platform and
    precision, the image and proteinbenchmark commit.
``monitor``
    in the background while the script runs: notes the first step this pod
    simulated (the first progress record written after the pod started) and
    samples GPU utilisation with ``nvidia-smi``.
``update``
    before every periodic upload: the last step and the figures so far, so a
    pod lost with its node still leaves a record up to its last upload.
``finish STATUS``
    before the final upload: the exit status and its meaning, peak memory and
    mean GPU utilisation.

The record is ``layout.Campaign.run_record(...)``, inside the Job's own output
directory, so the pod's uploads carry it to the bucket with everything else.
A figure that cannot be measured here (no ``nvidia-smi``, no cgroup memory
file) is ``null``, never a guess. Recording never stops the run: every
failure is logged and the command exits 0 (run-job.sh goes on regardless).

Standard library only (and OpenMM when importable): it runs in the pod's
image before and after the script, whatever the script imports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file by run-job.sh
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from protbench_nrp import exits, science  # noqa: E402
    from protbench_nrp.files import atomic_write  # noqa: E402
    from protbench_nrp.layout import Campaign  # noqa: E402
else:
    from . import exits, science
    from .files import atomic_write
    from .layout import Campaign

#: Version of the record's layout, for readers.
RECORD_VERSION = 1

#: Exit statuses of a pod's scripts and what they mean: the one table, exits.py.
EXIT_MEANINGS = {status.code: status.meaning for status in exits.EXIT_STATUSES}

#: Seconds between GPU samples (PROTBENCH_MONITOR_SECONDS); the first step is looked for
#: every FIRST_STEP_POLL_S (PROTBENCH_MONITOR_POLL_SECONDS) until found: a frame takes
#: seconds on a GPU, so the first progress record this pod writes is caught within one.
MONITOR_SECONDS = 30.0
FIRST_STEP_POLL_S = 0.5
#: Longest wait for nvidia-smi.
NVIDIA_SMI_TIMEOUT_S = 20

#: Where the kernel reports the container's memory: cgroup v2, then v1.
CGROUP_ROOT = Path("/sys/fs/cgroup")
_PEAK_FILES = ("memory.peak", "memory/memory.max_usage_in_bytes")

_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")


def exit_meaning(status: int | None) -> str | None:
    """What an exit status of a pod's script means (a signal's name for other 128+N)."""
    if status is None:
        return None
    if status in EXIT_MEANINGS:
        return EXIT_MEANINGS[status]
    if 128 < status < 128 + 65:
        try:
            return f"killed by {signal.Signals(status - 128).name}"
        except ValueError:
            pass
    return "unknown exit status (not in the table)"


# -- where and what ---------------------------------------------------------------------------

class PodContext:
    """The Job and pod this process runs in, from the environment the Job template gives it."""

    def __init__(self, env: dict[str, str] | None = None):
        env = dict(os.environ if env is None else env)
        self.env = env
        self.results = Path(env.get("PROTBENCH_RESULTS_DIR", "/results"))
        self.stage = env.get("PROTBENCH_STAGE", "")
        self.campaign = Campaign(env.get("PROTBENCH_TARGET", ""), env.get("PROTBENCH_FF", ""))
        self.replica = int(env["PROTBENCH_REPLICA"]) if env.get("PROTBENCH_REPLICA") else None
        self.window = int(env["PROTBENCH_WINDOW"]) if env.get("PROTBENCH_WINDOW") else None
        self.pod = env.get("POD_NAME", "")
        self.node = env.get("POD_NODE_NAME") or None
        self.state_dir = self.results / ".protbench-pod"
        self.cgroup_root = Path(env.get("PROTBENCH_CGROUP_ROOT", str(CGROUP_ROOT)))

    @property
    def record_path(self) -> Path:
        return self.results / self.campaign.run_record(self.stage, self.replica, self.window, self.pod)

    @property
    def progress_path(self) -> Path | None:
        relative = self.campaign.progress_file(self.stage, self.replica, self.window)
        return None if relative is None else self.results / relative

    @property
    def monitor_path(self) -> Path:
        """What the monitor found, kept on the volume, never uploaded (hidden directory)."""
        return self.state_dir / f"run-record-monitor.{self.pod}.json"


def gpu_info(timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> dict | None:
    """Model, driver and count of the GPUs nvidia-smi lists; ``None`` without nvidia-smi."""
    rows = _nvidia_smi(["--query-gpu=name,driver_version,uuid", "--format=csv,noheader"], timeout_s)
    if not rows:
        return None
    names = sorted({row[0] for row in rows})
    return {"model": names[0] if len(names) == 1 else ", ".join(names), "driver": rows[0][1],
            "count": len(rows), "uuids": [row[2] for row in rows if len(row) > 2]}


def gpu_utilization_percent(timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> float | None:
    """Mean utilisation of this pod's GPUs now, from nvidia-smi; ``None`` without it."""
    rows = _nvidia_smi(["--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"], timeout_s)
    values = []
    for row in rows or []:
        try:
            values.append(float(row[0]))
        except (ValueError, IndexError):  # "[N/A]" on some boards
            pass
    return sum(values) / len(values) if values else None


def _nvidia_smi(arguments: list[str], timeout_s: float) -> list[list[str]] | None:
    try:
        done = subprocess.run(["nvidia-smi", *arguments], capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines() if line.strip()]


def openmm_info(env: dict[str, str]) -> dict:
    """OpenMM's version, and the platform and precision the script is told to use.

    The scripts refuse a platform they cannot have rather than fall back
    (engine.select_platform), so the platform they are told is the one they
    run on; CPU and Reference have no precision to choose.
    """
    try:
        import openmm

        version = openmm.__version__
    except Exception:  # not importable here: say so rather than guess
        version = None
    platform = env.get("PROTBENCH_PLATFORM") or science.PLATFORM
    precision = env.get("PROTBENCH_PRECISION") or science.PRECISION
    if platform.lower() in ("cpu", "reference"):
        precision = None
    return {"version": version, "platform": platform, "precision": precision}


def proteinbenchmark_commit() -> str | None:
    """The commit the installed proteinbenchmark was built from (pip's direct_url.json), if any."""
    from importlib import metadata

    try:
        direct = metadata.distribution("proteinbenchmark").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        return json.loads(direct or "{}").get("vcs_info", {}).get("commit_id")
    except (ValueError, AttributeError):
        return None


def peak_memory_bytes(cgroup_root: Path) -> int | None:
    """The container's peak memory use as its cgroup counts it (what NRP compares with the request)."""
    for name in _PEAK_FILES:
        try:
            return int((cgroup_root / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return None


def read_step(progress_path: Path | None, inherited_unix: float | None = None) -> dict | None:
    """``{"phase", "step", "updated_unix"}`` of the progress record, if it exists.

    With ``inherited_unix`` (the ``updated_unix`` of the record the pod found
    at its start, which an earlier pod wrote), that record is not this pod's
    and counts as absent. Comparing with the pod's own clock instead would
    take an earlier pod's record for this one's after a node whose clock ran
    ahead.
    """
    if progress_path is None:
        return None
    try:
        payload = json.loads(progress_path.read_text())
        step = {"phase": str(payload["phase"]), "step": int(payload["step"])}
        updated = float(payload["updated_unix"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if inherited_unix is not None and updated == inherited_unix:
        return None
    return {**step, "updated_unix": updated}


# -- the record -------------------------------------------------------------------------------

def _write(path: Path, record: dict) -> None:
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True) + "\n", durable=False)


def _read(path: Path) -> dict | None:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def start(context: PodContext, now: float | None = None) -> dict:
    """Write the record of a pod that starts (and reset the monitor's findings)."""
    env = context.env
    image = env.get("PROTBENCH_IMAGE") or None
    digest = _DIGEST.search(image or "")
    request = env.get("POD_MEMORY_REQUEST_BYTES", "")
    record = {
        "kind": "run-record", "version": RECORD_VERSION,
        "pod": context.pod, "node": context.node,
        "stage": context.stage, "replica": context.replica, "window": context.window,
        "started_unix": time.time() if now is None else now, "updated_unix": None, "finished_unix": None,
        "gpu": gpu_info(),
        "openmm": openmm_info(env),
        "image": image, "image_digest": digest.group(1) if digest else None,
        "proteinbenchmark_ref": env.get("PROTBENCH_PROTEINBENCHMARK_REF") or None,
        "proteinbenchmark_commit": proteinbenchmark_commit(),
        "first_step": None, "last_step": None,
        "exit_status": None, "exit_meaning": None,
        "peak_memory_bytes": None,
        "memory_request_bytes": int(request) if request.isdigit() else None,
        "gpu_utilization_mean_percent": None, "gpu_utilization_samples": 0,
        # The progress record copy-in brought from the bucket: an earlier pod's, not this one's.
        "inherited_progress_unix": (read_step(context.progress_path) or {}).get("updated_unix"),
    }
    record["updated_unix"] = record["started_unix"]
    context.monitor_path.unlink(missing_ok=True)
    _write(context.record_path, record)
    return record


def update(context: PodContext, status: int | None = None, finished: bool = False,
           now: float | None = None) -> dict:
    """Bring the record up to date (and complete it, with ``finished``)."""
    record = _read(context.record_path) or start(context, now)
    now = time.time() if now is None else now
    found = _read(context.monitor_path) or {}
    inherited = record.get("inherited_progress_unix")
    first = record.get("first_step") or found.get("first_step") or read_step(context.progress_path, inherited)
    record["first_step"] = _step_only(first)
    record["last_step"] = _step_only(read_step(context.progress_path, inherited) or record.get("last_step"))
    samples = int(found.get("samples") or 0)
    if samples:
        record["gpu_utilization_mean_percent"] = round(float(found["utilization_sum"]) / samples, 2)
        record["gpu_utilization_samples"] = samples
    record["peak_memory_bytes"] = peak_memory_bytes(context.cgroup_root)
    record["updated_unix"] = now
    if finished:
        record["finished_unix"] = now
        record["exit_status"] = status
        record["exit_meaning"] = exit_meaning(status)
    _write(context.record_path, record)
    return record


def _step_only(step: dict | None) -> dict | None:
    return None if not step else {"phase": step["phase"], "step": int(step["step"])}


def monitor(context: PodContext, interval_s: float = MONITOR_SECONDS, poll_s: float = FIRST_STEP_POLL_S) -> None:
    """Sample until SIGTERM: the first step this pod simulates, and GPU utilisation."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    record = _read(context.record_path) or {}
    inherited = record.get("inherited_progress_unix")
    found = {"first_step": None, "utilization_sum": 0.0, "samples": 0}
    next_sample = time.monotonic()
    while not stop:
        if found["first_step"] is None:
            found["first_step"] = _step_only(read_step(context.progress_path, inherited))
        if time.monotonic() >= next_sample:
            utilization = gpu_utilization_percent()
            if utilization is not None:
                found["utilization_sum"] += utilization
                found["samples"] += 1
            next_sample = time.monotonic() + interval_s
        _write(context.monitor_path, found)
        waiting = found["first_step"] is None and context.progress_path is not None
        _sleep_until_stopped(poll_s if waiting else max(next_sample - time.monotonic(), 0.1), stop)


def _sleep_until_stopped(seconds: float, stop: list) -> None:
    deadline = time.monotonic() + seconds
    while not stop and time.monotonic() < deadline:
        time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))


def main(argv: list[str]) -> int:
    usage = "usage: runrecord.py start|update|monitor|finish STATUS"
    if not argv or argv[0] not in ("start", "update", "monitor", "finish") or \
            (argv[0] == "finish" and (len(argv) != 2 or not argv[1].lstrip("-").isdigit())):
        print(f"run-record: {usage}", file=sys.stderr)
        return 2
    try:
        context = PodContext()
        if not context.pod:
            print("run-record: POD_NAME is empty (the Job template sets it from the downward "
                  "API); no run record kept", file=sys.stderr)
            return 0
        if argv[0] == "start":
            start(context)
        elif argv[0] == "update":
            update(context)
        elif argv[0] == "finish":
            update(context, int(argv[1]), finished=True)
        else:
            monitor(context, float(context.env.get("PROTBENCH_MONITOR_SECONDS") or MONITOR_SECONDS),
                    float(context.env.get("PROTBENCH_MONITOR_POLL_SECONDS") or FIRST_STEP_POLL_S))
    except Exception as error:  # a record is worth less than the run: log and go on
        print(f"run-record: could not {argv[0]} the run record: {type(error).__name__}: {error}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
