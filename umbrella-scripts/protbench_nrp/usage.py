"""What a window's pods cost: GPU-hours spent and lost, and whether they used what they asked for.

Reads the run records the pods leave (:mod:`protbench_nrp.runrecord`), one per
pod, and sums them per window:

* **GPU-hours spent**: each pod's wall time from its start to its last record
  (its final one, or its last periodic update when the pod was lost), times
  the GPUs it held (as many as ``nvidia-smi`` listed, else the one a pod
  requests).
* **GPU-hours lost** to work done again: a pod that resumes from a checkpoint
  older than the last step its predecessor reached simulates those steps a
  second time. The redone steps cost what a step cost that predecessor.
* **NRP's usage rule**: mean GPU utilisation above 40 % and peak memory at
  least 20 % of the request. A window breaking it is flagged; the README says
  how to size the requests from a pilot window.
"""

from __future__ import annotations

from dataclasses import dataclass

#: NRP's usage rule (https://docs.nrp.ai/): GPU utilisation above this, in percent ...
MIN_GPU_UTILIZATION_PERCENT = 40.0
#: ... and memory use at least this fraction of the request.
MIN_MEMORY_FRACTION = 0.20

#: GPUs a pod holds when no nvidia-smi counted them: the template requests one.
GPUS_PER_POD = 1

_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class PodUsage:
    """One pod's share of a window."""

    pod: str
    started_unix: float
    gpu_hours: float
    lost_gpu_hours: float
    gpu_model: str | None
    finished: bool


@dataclass(frozen=True)
class WindowUsage:
    """A window's pods summed up.

    Attributes
    ----------
    pods : int
        Pods that left a run record.
    current_gpu : str or None
        The GPU model of the newest pod (``None`` when it saw none).
    gpu_hours, lost_gpu_hours : float
        GPU-hours spent, and the part of them spent on steps simulated again.
    gpu_utilization_percent : float or None
        Mean GPU utilisation over every sample of every pod.
    memory_fraction : float or None
        Highest peak memory of a pod over its memory request.
    flags : tuple of str
        How the window breaks NRP's usage rule (empty when it does not, or
        when nothing was measured).
    """

    pods: int
    current_gpu: str | None
    gpu_hours: float
    lost_gpu_hours: float
    gpu_utilization_percent: float | None
    memory_fraction: float | None
    flags: tuple[str, ...] = ()
    per_pod: tuple[PodUsage, ...] = ()


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _hours(record: dict) -> float:
    started = _number(record.get("started_unix"))
    ended = _number(record.get("finished_unix")) or _number(record.get("updated_unix"))
    if started is None or ended is None:
        return 0.0
    gpu = record.get("gpu") or {}
    gpus = gpu.get("count") if isinstance(gpu.get("count"), int) and gpu.get("count") > 0 else GPUS_PER_POD
    return max(ended - started, 0.0) / _SECONDS_PER_HOUR * gpus


def _step(record: dict, which: str) -> tuple[str, int] | None:
    step = record.get(which)
    if not isinstance(step, dict) or not isinstance(step.get("step"), int):
        return None
    phase = "production" if step.get("phase") == "finished" else step.get("phase")
    return phase, step["step"]


def _hours_per_step(record: dict) -> float | None:
    """GPU-hours one step cost this pod, when it ran steps of one phase."""
    first, last = _step(record, "first_step"), _step(record, "last_step")
    if not first or not last or first[0] != last[0] or last[1] <= first[1]:
        return None
    return _hours(record) / (last[1] - first[1])


def _redone_hours(previous: dict, current: dict) -> float:
    """GPU-hours ``current`` spent on steps ``previous`` had reached already."""
    reached, resumed = _step(previous, "last_step"), _step(current, "first_step")
    if not reached or not resumed or reached[0] != resumed[0] or reached[1] <= resumed[1]:
        return 0.0
    cost = _hours_per_step(previous) or _hours_per_step(current)
    return (reached[1] - resumed[1]) * cost if cost else 0.0


def window_usage(records: list[dict]) -> WindowUsage:
    """Sum up the run records of one window's pods (in any order)."""
    ordered = sorted((r for r in records if _number(r.get("started_unix")) is not None),
                     key=lambda r: r["started_unix"])
    pods = []
    for index, record in enumerate(ordered):
        lost = _redone_hours(ordered[index - 1], record) if index else 0.0
        gpu = record.get("gpu") or {}
        pods.append(PodUsage(str(record.get("pod", "")), float(record["started_unix"]), _hours(record),
                             lost, gpu.get("model"), record.get("finished_unix") is not None))
    samples = [(r.get("gpu_utilization_mean_percent"), r.get("gpu_utilization_samples") or 0) for r in ordered]
    samples = [(float(mean), int(n)) for mean, n in samples if _number(mean) is not None and n]
    utilization = (sum(mean * n for mean, n in samples) / sum(n for _, n in samples)) if samples else None
    fractions = [r["peak_memory_bytes"] / r["memory_request_bytes"] for r in ordered
                 if _number(r.get("peak_memory_bytes")) and _number(r.get("memory_request_bytes"))]
    memory = max(fractions) if fractions else None
    flags = []
    if utilization is not None and utilization < MIN_GPU_UTILIZATION_PERCENT:
        flags.append(f"GPU {utilization:.0f}% < {MIN_GPU_UTILIZATION_PERCENT:.0f}%")
    if memory is not None and memory < MIN_MEMORY_FRACTION:
        flags.append(f"memory {100 * memory:.0f}% of request < {100 * MIN_MEMORY_FRACTION:.0f}%")
    return WindowUsage(
        pods=len(ordered), current_gpu=pods[-1].gpu_model if pods else None,
        gpu_hours=sum(p.gpu_hours for p in pods), lost_gpu_hours=sum(p.lost_gpu_hours for p in pods),
        gpu_utilization_percent=utilization, memory_fraction=memory, flags=tuple(flags), per_pod=tuple(pods))
