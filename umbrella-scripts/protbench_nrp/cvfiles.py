"""Reading an umbrella campaign's CV files and parameter records, locally or from the bucket.

* :func:`parse_cv_timeseries` reads one window's CV file, tolerating the torn
  last line a killed pod leaves and the frames a restart rewrites.
* :func:`replicas_found` and :func:`windows_found` list what a
  :class:`~protbench_nrp.store.ResultsStore` holds, on this machine or
  straight from the S3 bucket (only the CV and parameter files of each window
  are read: never a trajectory).
* :func:`load_campaign` gathers every window with its recorded
  :class:`~protbench_nrp.records.UmbrellaParameters` and checks them against
  each other, naming what is missing or inconsistent.
"""

from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from .errors import ProtbenchError
from .layout import Campaign, window_tag
from .records import UmbrellaParameters, record_from_dict
from .store import ResultsStore

#: Windows read at once (each is two round trips to the bucket).
READ_THREADS = 8

_REPLICA_DIR = re.compile(r"^replica-(\d+)$")
_WINDOW_DIR = re.compile(r"^window-(\d+)$")
# Parameters recorded per window that must agree with the same window of
# every other replica for the replicas to sample the same ensembles.
_SHARED_PARAMETERS = ("centre", "k_kcal_per_mol", "temperature_kelvin", "n_windows", "cv_name")


class AnalysisError(ProtbenchError):
    """Input the analysis cannot use; the message names the file or window at fault and the fix."""


# -- one CV file ------------------------------------------------------------------


@dataclass(frozen=True)
class CVTimeSeries:
    """The production frames of one window.

    Attributes
    ----------
    steps : numpy.ndarray of int
        MD step of each frame, strictly increasing.
    values : numpy.ndarray of float
        The collective variable at each frame (dimensionless for Q).
    notes : tuple of str
        What was repaired while reading (torn last line, frames superseded by
        a restart), to be reported as warnings.
    """

    steps: np.ndarray
    values: np.ndarray
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.values)


def parse_cv_timeseries(text: str, source: str) -> CVTimeSeries:
    """Parse the text of a CV file: ``#"Step" "CV"`` then one ``step value`` line per frame.

    Parameters
    ----------
    text : str
        The whole file.
    source : str
        Where the text came from (a path or bucket key), used in messages.

    Raises
    ------
    AnalysisError
        For a malformed line anywhere but at the very end of the file, or a
        value that is not finite.
    """
    notes = []
    lines = text.split("\n")
    # A file that does not end in a newline was cut while a frame was being
    # written (a pod killed mid-write, or a copy taken mid-write): its last
    # line may look valid yet hold a truncated number, so it is never trusted.
    if lines and lines[-1].strip():
        notes.append(f"{source}: dropped the torn last line {lines[-1][:40]!r} (a partial write)")
    lines = lines[:-1]
    steps, values = [], []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields_ = stripped.split()
        try:
            if len(fields_) != 2:
                raise ValueError
            step, value = int(fields_[0]), float(fields_[1])
        except ValueError:
            raise AnalysisError(
                f"{source}, line {number}: expected 'step value', found {stripped[:60]!r}. "
                f"The file is damaged: restore it from the bucket or rerun the window"
            ) from None
        if not math.isfinite(value):
            raise AnalysisError(
                f"{source}, line {number}: the collective variable is {value}; the simulation "
                f"blew up there. Rerun the window from an earlier checkpoint"
            )
        steps.append(step)
        values.append(value)
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    keep = _latest_frames(steps)
    if not keep.all():
        notes.append(
            f"{source}: {int((~keep).sum())} frames were written again after a restart; "
            f"kept the later copies"
        )
        steps, values = steps[keep], values[keep]
    return CVTimeSeries(steps, values, tuple(notes))


def _latest_frames(steps: np.ndarray) -> np.ndarray:
    """Mask of frames not superseded by a later frame of the same or an earlier step.

    A window resumed from a checkpoint writes again the frames after that
    checkpoint; the later copies belong to the trajectory that carried on.
    """
    if len(steps) < 2:
        return np.ones(len(steps), dtype=bool)
    later_min = np.minimum.accumulate(steps[::-1])[::-1]
    keep = np.ones(len(steps), dtype=bool)
    keep[:-1] = steps[:-1] < later_min[1:]
    return keep


# -- where results are read from -----------------------------------------------------


def numbered(store: ResultsStore, directory: PurePosixPath, pattern: re.Pattern) -> list[int]:
    """The numbers of the entries of ``directory`` whose names match ``pattern``, sorted."""
    found = (pattern.match(name) for name in store.list(directory))
    return sorted(int(match.group(1)) for match in found if match)


def replicas_found(store: ResultsStore, campaign: Campaign) -> list[int]:
    """The replicas with a directory in the results (``replica-N``)."""
    return numbered(store, campaign.root, _REPLICA_DIR)


def windows_found(store: ResultsStore, campaign: Campaign, replica: int) -> list[int]:
    """The windows of ``replica`` with a directory in the results (``window-NN``)."""
    return numbered(store, campaign.replica_dir(replica), _WINDOW_DIR)


# -- a whole campaign ----------------------------------------------------------------


@dataclass(frozen=True)
class WindowSamples:
    """The production frames of one window and the parameters it ran with."""

    replica: int
    window: int
    parameters: UmbrellaParameters
    series: CVTimeSeries
    source: str

    @property
    def label(self) -> str:
        return f"replica {self.replica} window {window_tag(self.window)}"

    @property
    def centre(self) -> float:
        return self.parameters.centre

    @property
    def k_kcal_per_mol(self) -> float:
        """The bias is ``k * (Q - centre)**2`` (no factor 1/2)."""
        return self.parameters.k_kcal_per_mol

    @property
    def production_length_ns(self) -> float:
        return float(self.parameters.production_length_ns)

    @property
    def expected_frames(self) -> int:
        return int(round(self.parameters.production_length_ns * 1000.0 / self.parameters.frame_ps))


@dataclass
class CampaignSamples:
    """Every window found for a campaign, and what was not found."""

    campaign: Campaign
    replicas: tuple[int, ...]
    n_windows: int
    windows: list[WindowSamples]
    missing: dict[int, list[int]] = field(default_factory=dict)   # replica -> windows
    warnings: list[str] = field(default_factory=list)

    @property
    def temperature_kelvin(self) -> float:
        return self.windows[0].parameters.temperature_kelvin

    @property
    def cv_name(self) -> str:
        return self.windows[0].parameters.cv_name


def load_campaign(source: ResultsStore, campaign: Campaign, replicas: tuple[int, ...] | None = None) -> CampaignSamples:
    """Read the CV file and umbrella parameters of every window of a campaign.

    Parameters
    ----------
    source : ResultsStore
        Where the results are (:class:`~protbench_nrp.store.LocalStore` or
        :class:`~protbench_nrp.store.BucketStore`).
    campaign : Campaign
    replicas : tuple of int, optional
        The replicas to read; all found when omitted.

    Returns
    -------
    CampaignSamples
        With a warning for each repaired file, each missing window and each
        window shorter than its production length.

    Raises
    ------
    AnalysisError
        When nothing can be analysed, a requested replica does not exist, a
        CV file has no parameters beside it, or windows disagree on what
        they simulated.
    StoreError
        When the results cannot be read (an unreachable bucket, refused keys).
    """
    found = replicas_found(source, campaign)
    where = source.describe(campaign.root)
    if not found:
        raise AnalysisError(
            f"no replica directories under {where}: there is nothing to analyse. Check "
            f"--target/--ff and the results root (-o), or run the windows first"
        )
    if replicas:
        absent = sorted(set(replicas) - set(found))
        if absent:
            raise AnalysisError(
                f"replica {', '.join(map(str, absent))} not found under {where} (found: "
                f"{', '.join(map(str, found))}); choose among those with --replica"
            )
        found = sorted(set(replicas))

    slots = [(replica, window) for replica in found for window in windows_found(source, campaign, replica)]
    # A few reads at a time: from the bucket each file is a round trip.
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        read = list(pool.map(lambda slot: _read_window(source, campaign, *slot), slots))
    windows, warnings, not_started = [], [], {}
    for (replica, window), (sample, reason) in zip(slots, read):
        if sample is None:
            not_started.setdefault(replica, []).append((window, reason))
            continue
        warnings.extend(sample.series.notes)
        windows.append(sample)
    if not windows:
        raise AnalysisError(
            f"no CV files ({campaign.window_files(1, 0).cv_timeseries.name}) with production "
            f"frames under {where}: the windows have not produced any yet. Run them, or wait "
            f"until their production has started"
        )

    n_windows = _check_consistency(windows)
    missing = {}
    for replica in found:
        have = {s.window for s in windows if s.replica == replica}
        gone = [w for w in range(n_windows) if w not in have]
        if gone:
            missing[replica] = gone
            reasons = dict(not_started.get(replica, []))
            detail = "; ".join(
                f"{window_tag(w)} ({reasons.get(w, 'no window directory')})" for w in gone)
            warnings.append(
                f"replica {replica}: {len(gone)} of {n_windows} windows missing, analysed "
                f"without them: {detail}"
            )
    short = [s for s in windows if len(s.series) < s.expected_frames]
    if short:
        listing = ", ".join(f"{s.label} ({len(s.series)}/{s.expected_frames})" for s in short)
        warnings.append(
            f"{len(short)} windows have fewer production frames than their production length "
            f"(still running or stopped early), used as they are: {listing}"
        )
    return CampaignSamples(campaign, tuple(found), n_windows, windows, missing, warnings)


def _read_window(source: ResultsStore, campaign: Campaign, replica: int, window: int):
    """One window's samples, or ``(None, reason)`` when it has produced nothing yet."""
    files = campaign.window_files(replica, window)
    cv_text = source.read_text(files.cv_timeseries)
    parameters_text = source.read_text(files.parameters)
    if cv_text is None:
        return None, "no production frames yet" if parameters_text else "no outputs yet"
    if parameters_text is None:
        raise AnalysisError(
            f"{source.describe(files.cv_timeseries)} has no umbrella parameters beside it "
            f"({files.parameters.name}), so its centre, force constant and temperature are "
            f"unknown. Copy the parameters file back from the pod or bucket, or rerun the window"
        )
    parameters = _parse_parameters(parameters_text, source.describe(files.parameters))
    recorded = (parameters.target, parameters.ff, parameters.replica, parameters.window)
    if recorded != (campaign.target, campaign.ff, replica, window):
        raise AnalysisError(
            f"{source.describe(files.parameters)} records target {parameters.target!r}, ff "
            f"{parameters.ff!r}, replica {parameters.replica}, window {parameters.window}, but "
            f"lies in the place of {campaign.target!r}/{campaign.ff!r} replica {replica} window "
            f"{window}: it was copied to the wrong directory. Move it back where it belongs"
        )
    series = parse_cv_timeseries(cv_text, source.describe(files.cv_timeseries))
    if len(series) == 0:
        return None, "CV file has no frames yet"
    return WindowSamples(replica, window, parameters, series, source.describe(files.cv_timeseries)), ""


def _parse_parameters(text: str, where: str) -> UmbrellaParameters:
    try:
        payload = json.loads(text)
        if not isinstance(payload, dict):
            raise ValueError("it is not a JSON object")
        parameters = record_from_dict(UmbrellaParameters, payload)
        for name in ("centre", "k_kcal_per_mol", "temperature_kelvin", "frame_ps",
                     "production_length_ns"):
            if not isinstance(getattr(parameters, name), (int, float)):
                raise ValueError(f"{name} is not a number")
    except ValueError as error:
        raise AnalysisError(
            f"{where} is not a valid umbrella-parameters record ({error}); it is written by "
            f"run-umbrella-window.py when the window starts: rerun the window to rewrite it"
        ) from None
    return parameters


def _check_consistency(windows: list[WindowSamples]) -> int:
    """Check that replicas ran the same windows at one temperature; return the window count."""
    by_window: dict[int, list[WindowSamples]] = {}
    for sample in windows:
        by_window.setdefault(sample.window, []).append(sample)
    conflicts = []
    for window, samples in sorted(by_window.items()):
        first = samples[0]
        for other in samples[1:]:
            for name in _SHARED_PARAMETERS:
                a, b = getattr(first.parameters, name), getattr(other.parameters, name)
                if a != b and not (isinstance(a, float) and math.isclose(a, b, rel_tol=1e-9)):
                    conflicts.append(f"window {window_tag(window)} {name}: {a} in replica "
                                     f"{first.replica} but {b} in replica {other.replica}")
    if conflicts:
        raise AnalysisError(
            "replicas disagree on the umbrella windows they ran, so they cannot be combined: "
            + "; ".join(conflicts)
            + ". Analyse them separately with --replica, or rerun the odd replica with the "
              "campaign's settings"
        )
    temperatures = sorted({s.parameters.temperature_kelvin for s in windows})
    if len(temperatures) > 1:
        listing = ", ".join(f"{s.label}: {s.parameters.temperature_kelvin} K" for s in windows
                            if s.parameters.temperature_kelvin != temperatures[0])
        raise AnalysisError(
            f"windows ran at different temperatures ({temperatures[0]} K and {listing}); one "
            f"PMF needs one temperature. Rerun the odd windows at {temperatures[0]} K"
        )
    counts = sorted({s.parameters.n_windows for s in windows})
    if len(counts) > 1:
        raise AnalysisError(
            f"windows record different window counts ({', '.join(map(str, counts))}); the "
            f"campaign was launched twice with different N_WINDOWS. Move the stray results away"
        )
    return counts[0]
