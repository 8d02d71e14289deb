"""The free-energy profile of an umbrella campaign, with error bars.

The pieces, each with one job:

* :func:`parse_cv_timeseries` reads one window's CV file, tolerating the torn
  last line a killed pod leaves and the frames a restart rewrites.
* :class:`LocalResults` and :class:`BucketResults` read files of the results
  layout from a results root on this machine or straight from the S3 bucket
  (only the CV and parameter files of each window: never a trajectory).
* :func:`load_campaign` gathers every window with its recorded
  :class:`~protbench_nrp.records.UmbrellaParameters` and checks them against
  each other, naming what is missing or inconsistent.
* :func:`decorrelate_window` drops the equilibration part of a window and
  subsamples it by its statistical inefficiency.
* :class:`PMFEstimator` turns decorrelated windows into a PMF with MBAR.
* :func:`analyze_campaign` does all of the above per replica and for all
  replicas together; :func:`write_outputs` writes the CSV files and plots.

Energies cross every boundary in kcal/mol and temperatures in kelvin. The
umbrella bias of a window is ``k*(cv - centre)**2`` (no factor 1/2), exactly
the ``CustomCVForce`` the windows ran with.
"""

from __future__ import annotations

import csv
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import ProtbenchError
from .layout import BUCKET_PREFIX, Campaign, window_tag
from .records import UmbrellaParameters, record_from_dict
from .science import MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K

#: Neighbouring windows whose MBAR overlap is below this are reported.
DEFAULT_OVERLAP_THRESHOLD = 0.03

#: A window needs this many production frames left after discarding its
#: equilibration for a statistical inefficiency to mean anything.
MIN_FRAMES = 10

#: Equilibration detection scans at most this many candidate start frames per
#: window: scanning every frame costs O(N^2) and moves the answer by a frame.
EQUILIBRATION_SCAN_POINTS = 200

#: Windows read at once (each is two round trips to the bucket).
READ_THREADS = 8

_REPLICA_DIR = re.compile(r"^replica-(\d+)$")
_WINDOW_DIR = re.compile(r"^window-(\d+)$")
# Parameters recorded per window that must agree with the same window of
# every other replica for the replicas to sample the same ensembles.
_SHARED_PARAMETERS = ("centre", "k_kcal_per_mol", "temperature_kelvin", "n_windows", "cv_name")


class AnalysisError(ProtbenchError):
    """Input the analysis cannot use; the message names the file or window at fault and the fix."""


def _pymbar():
    """Import pymbar on first use: status tools import this module and need none of it."""
    import pymbar
    from pymbar import timeseries

    return pymbar, timeseries


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


class LocalResults:
    """Files of the results layout below a results root on this machine.

    Parameters
    ----------
    root : path-like
        The results root (the launcher's ``LOCAL_RESULT_DIR``, ``-o`` of the scripts).
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def describe(self, relative: PurePosixPath | str) -> str:
        return str(self.root / relative)

    def read_text(self, relative: PurePosixPath | str) -> str | None:
        """The file's text, or ``None`` when it does not exist."""
        try:
            return (self.root / relative).read_text()
        except FileNotFoundError:
            return None

    def _numbered(self, directory: PurePosixPath, pattern: re.Pattern) -> list[int]:
        path = self.root / directory
        if not path.is_dir():
            return []
        found = (pattern.match(p.name) for p in path.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def replicas(self, campaign: Campaign) -> list[int]:
        return self._numbered(campaign.root, _REPLICA_DIR)

    def windows(self, campaign: Campaign, replica: int) -> list[int]:
        return self._numbered(campaign.replica_dir(replica), _WINDOW_DIR)


class BucketResults:
    """Files of the results layout read straight from an S3 bucket.

    Only the objects asked for are downloaded; directories are listed with a
    delimiter so a window's trajectory segments are never even listed.

    Parameters
    ----------
    client : botocore S3 client
        From :func:`bucket_client` or any ``boto3.client("s3")``.
    bucket : str
        Bucket name.
    prefix : str
        Key prefix of the results root inside the bucket (``results`` for
        ``nrp:proteinbenchmark-jm-bucket/results``).
    """

    def __init__(self, client, bucket: str, prefix: str = BUCKET_PREFIX):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key(self, relative: PurePosixPath | str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else str(relative)

    def describe(self, relative: PurePosixPath | str) -> str:
        return f"s3://{self.bucket}/{self.key(relative)}"

    def read_text(self, relative: PurePosixPath | str) -> str | None:
        """The object's text, or ``None`` when there is no such key."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(relative))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._explain(error) from None
        except Exception as error:  # endpoint unreachable, no credentials, ...
            raise self._explain(error) from None
        return response["Body"].read().decode()

    def _numbered(self, directory: PurePosixPath, pattern: re.Pattern) -> list[int]:
        prefix = self.key(directory) + "/"
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for entry in page.get("CommonPrefixes", []):
                    match = pattern.match(entry["Prefix"][len(prefix):].rstrip("/"))
                    if match:
                        found.append(int(match.group(1)))
        except Exception as error:
            raise self._explain(error) from None
        return sorted(found)

    def replicas(self, campaign: Campaign) -> list[int]:
        return self._numbered(campaign.root, _REPLICA_DIR)

    def windows(self, campaign: Campaign, replica: int) -> list[int]:
        return self._numbered(campaign.replica_dir(replica), _WINDOW_DIR)

    def _explain(self, error: Exception) -> AnalysisError:
        return AnalysisError(
            f"cannot read s3://{self.bucket}/{self.prefix}: {error}. Check the bucket name "
            f"(--bucket), the endpoint and the keys (the rclone config's remote, or "
            f"AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )


def bucket_client(endpoint_url: str | None = None, rclone_remote: str = "nrp"):
    """An S3 client for the results bucket, with the launcher's preflight credentials.

    Keys and endpoint come from section ``[rclone_remote]`` of the rclone
    config (``$RCLONE_CONFIG`` or ``~/.config/rclone/rclone.conf``), else from
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_ENDPOINT_URL``
    (see :func:`protbench_nrp.preflight.s3_access`). ``endpoint_url`` wins
    over both.

    Raises
    ------
    AnalysisError
        When no credentials are found.
    """
    from dataclasses import replace

    from .preflight import PreflightError, s3_access

    try:
        access = s3_access(rclone_remote)
    except PreflightError as error:
        raise AnalysisError(str(error).replace(", or launch with --skip-preflight", "")) from None
    if endpoint_url:
        access = replace(access, endpoint_url=endpoint_url)
    return access.client()


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


def load_campaign(source, campaign: Campaign, replicas: tuple[int, ...] | None = None) -> CampaignSamples:
    """Read the CV file and umbrella parameters of every window of a campaign.

    Parameters
    ----------
    source : LocalResults or BucketResults
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
    """
    found = source.replicas(campaign)
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

    slots = [(replica, window) for replica in found for window in source.windows(campaign, replica)]
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


def _read_window(source, campaign: Campaign, replica: int, window: int):
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


# -- one window: equilibration and decorrelation ---------------------------------------


@dataclass(frozen=True)
class DecorrelatedWindow:
    """The uncorrelated samples of one window that go into MBAR.

    Attributes
    ----------
    n_frames : int
        Production frames read.
    n_discarded : int
        Leading frames dropped as equilibration.
    statistical_inefficiency : float
        g of the kept part: one sample in ``g`` frames is used.
    samples : numpy.ndarray
        The CV values used.
    """

    replica: int
    window: int
    centre: float
    k_kcal_per_mol: float
    n_frames: int
    n_discarded: int
    statistical_inefficiency: float
    samples: np.ndarray

    @property
    def label(self) -> str:
        return f"replica {self.replica} window {window_tag(self.window)}"


def decorrelate_window(sample: WindowSamples, discard_frames: int | None = None) -> DecorrelatedWindow:
    """Drop the equilibration part of a window and keep uncorrelated frames.

    Parameters
    ----------
    sample : WindowSamples
    discard_frames : int, optional
        Leading frames to drop; detected with
        :func:`pymbar.timeseries.detect_equilibration` when omitted.

    Raises
    ------
    AnalysisError
        When fewer than :data:`MIN_FRAMES` frames would remain.
    """
    _, timeseries = _pymbar()
    values = sample.series.values
    n = len(values)
    if discard_frames is not None:
        start = int(discard_frames)
    elif n >= MIN_FRAMES and values.std() > 0:
        start, _, _ = timeseries.detect_equilibration(
            values, nskip=max(1, n // EQUILIBRATION_SCAN_POINTS))
        start = int(start)
    else:
        start = 0
    kept = values[start:]
    if len(kept) < MIN_FRAMES:
        raise AnalysisError(
            f"{sample.label} has {n} production frames, {len(kept)} after discarding {start} "
            f"as equilibration; at least {MIN_FRAMES} are needed. Let it run longer or lower "
            f"--discard-frames"
        )
    g = float(timeseries.statistical_inefficiency(kept)) if kept.std() > 0 else 1.0
    indices = timeseries.subsample_correlated_data(kept, g=g) if g > 1.0 else range(len(kept))
    p = sample.parameters
    return DecorrelatedWindow(sample.replica, sample.window, p.centre, p.k_kcal_per_mol, n, start,
                              g, np.asarray(kept[np.asarray(indices, dtype=int)]))


# -- MBAR -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PMF:
    """A potential of mean force on histogram bins of the CV.

    Attributes
    ----------
    bin_edges : numpy.ndarray
    pmf_kcal_per_mol : numpy.ndarray
        Zero at the lowest bin; NaN where no sample fell.
    uncertainty_kcal_per_mol : numpy.ndarray
        One standard error of the difference to the lowest bin.
    samples_per_bin : numpy.ndarray of int
    state_centres, state_windows : tuple
        The umbrella states of MBAR, in order of centre, and their window index.
    overlap : numpy.ndarray
        MBAR overlap matrix between the states.
    """

    bin_edges: np.ndarray
    pmf_kcal_per_mol: np.ndarray
    uncertainty_kcal_per_mol: np.ndarray
    samples_per_bin: np.ndarray
    state_centres: tuple[float, ...]
    state_windows: tuple[int, ...]
    overlap: np.ndarray

    @property
    def bin_centres(self) -> np.ndarray:
        return 0.5 * (self.bin_edges[1:] + self.bin_edges[:-1])

    def holes(self) -> list[tuple[float, float]]:
        """CV ranges ``(low, high)`` of empty bins lying between filled ones, in order.

        Empty bins at either end of the histogram are not holes: the
        sampled range simply ends there.
        """
        filled = np.flatnonzero(self.samples_per_bin > 0)
        holes = []
        for before, after in zip(filled[:-1], filled[1:]):
            if after > before + 1:
                holes.append((float(self.bin_edges[before + 1]), float(self.bin_edges[after])))
        return holes

    def windows_around(self, low: float, high: float) -> list[tuple[int, float]]:
        """``(window, centre)`` of the states whose centres bracket or lie in ``[low, high]``.

        That is every state centred inside the range, plus the nearest one
        centred below it and the nearest one centred above it.
        """
        centres = np.asarray(self.state_centres)
        inside = np.flatnonzero((centres >= low) & (centres <= high))
        below = np.flatnonzero(centres < low)
        above = np.flatnonzero(centres > high)
        chosen = sorted(set(inside) | set(below[-1:]) | set(above[:1]))
        return [(self.state_windows[i], float(centres[i])) for i in chosen]

    def poor_overlaps(self, threshold: float) -> list[tuple[int, int, float]]:
        """Neighbouring states ``(window_a, window_b, overlap)`` whose overlap is below ``threshold``."""
        poor = []
        for i in range(len(self.state_windows) - 1):
            value = float(min(self.overlap[i, i + 1], self.overlap[i + 1, i]))
            if value < threshold:
                poor.append((self.state_windows[i], self.state_windows[i + 1], value))
        return poor


class PMFEstimator:
    """MBAR over umbrella windows that share one temperature, reweighted to no bias.

    Windows with the same centre and force constant (the same window of
    different replicas) are pooled into one thermodynamic state.

    Parameters
    ----------
    temperature_kelvin : float
    bin_edges : array-like
        Histogram bin edges along the CV.
    n_bootstraps : int
        0 for MBAR's analytical uncertainties, else the number of bootstrap
        resamples (each one solves MBAR again).
    seed : int
        Seeds the bootstrap.
    """

    def __init__(self, temperature_kelvin: float, bin_edges, n_bootstraps: int = 0, seed: int = 0):
        if temperature_kelvin <= 0:
            raise AnalysisError(f"temperature {temperature_kelvin} K is not positive")
        self.kt_kcal_per_mol = MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * temperature_kelvin
        self.bin_edges = np.asarray(bin_edges, dtype=float)
        self.n_bootstraps = int(n_bootstraps)
        self.seed = seed

    def estimate(self, windows: list[DecorrelatedWindow]) -> PMF:
        """The PMF of ``windows`` on this estimator's bins, zero at its lowest bin."""
        pymbar, _ = _pymbar()
        states: dict[tuple[float, float], list[DecorrelatedWindow]] = {}
        for w in windows:
            states.setdefault((w.centre, w.k_kcal_per_mol), []).append(w)
        keys = sorted(states)
        # Samples in state order: BAR initialisation pairs neighbouring states by position.
        ordered = [w for key in keys for w in states[key]]
        x_n = np.concatenate([w.samples for w in ordered])
        n_k = np.array([sum(len(w.samples) for w in states[key]) for key in keys])
        centres = np.array([key[0] for key in keys])[:, None]
        forces = np.array([key[1] for key in keys])[:, None]
        u_kn = forces * (x_n[None, :] - centres) ** 2 / self.kt_kcal_per_mol
        mbar = pymbar.MBAR(u_kn, n_k, initialize="BAR" if len(keys) > 1 else "zeros")

        n_bins = len(self.bin_edges) - 1
        bin_n = np.clip(np.digitize(x_n, self.bin_edges) - 1, 0, n_bins - 1)
        counts = np.bincount(bin_n, minlength=n_bins)
        filled = np.flatnonzero(counts)
        label = np.full(n_bins, -1)
        label[filled] = np.arange(len(filled))
        label_n = label[bin_n]
        if self.n_bootstraps:
            f_b = _bin_free_energies(mbar.f_k, u_kn, n_k, label_n, len(filled))
            reference = int(np.argmin(f_b))
            f_b -= f_b[reference]
            df_b = self._bootstrap(mbar.f_k, u_kn, n_k, label_n, len(filled), reference,
                                   [len(w.samples) for w in ordered])
        else:
            # Each bin is a state whose energy is 0 inside it and infinite outside:
            # its MBAR free energy is the PMF there, with MBAR's covariance.
            u_ln = np.full((len(filled), len(x_n)), np.inf)
            u_ln[label_n, np.arange(len(x_n))] = 0.0
            result = mbar.compute_perturbed_free_energies(u_ln)
            reference = int(np.argmin(result["Delta_f"][0]))
            f_b, df_b = result["Delta_f"][reference], result["dDelta_f"][reference]
        pmf = np.full(n_bins, np.nan)
        error = np.full(n_bins, np.nan)
        pmf[filled] = f_b * self.kt_kcal_per_mol
        error[filled] = df_b * self.kt_kcal_per_mol
        overlap = np.asarray(mbar.compute_overlap()["matrix"])
        return PMF(self.bin_edges.copy(), pmf, error, counts, tuple(float(c) for c in centres[:, 0]),
                   tuple(states[key][0].window for key in keys), overlap)

    def _bootstrap(self, f_k, u_kn, n_k, label_n, n_filled, reference, window_sizes) -> np.ndarray:
        """Standard deviation of bin free energies over resamples of every window's samples."""
        pymbar, _ = _pymbar()
        rng = np.random.default_rng(self.seed)
        starts = np.concatenate([[0], np.cumsum(window_sizes)[:-1]])
        draws = []
        for _ in range(self.n_bootstraps):
            # Resampling within each window keeps every state's sample count.
            pick = np.concatenate([start + rng.integers(0, size, size)
                                   for start, size in zip(starts, window_sizes)])
            u_boot = u_kn[:, pick]
            solved = pymbar.MBAR(u_boot, n_k, initial_f_k=f_k)
            f_b = _bin_free_energies(solved.f_k, u_boot, n_k, label_n[pick], n_filled)
            draws.append(f_b - f_b[reference])
        draws = np.array(draws)
        draws[~np.isfinite(draws)] = np.nan  # a bin no resample reached says nothing
        return np.nanstd(draws, axis=0)


def _bin_free_energies(f_k, u_kn, n_k, label_n, n_bins) -> np.ndarray:
    """Dimensionless free energy of each bin in the unbiased state, from MBAR's ``f_k``."""
    from scipy.special import logsumexp

    log_w_n = -logsumexp(f_k[:, None] - u_kn, b=n_k[:, None], axis=0)
    top = log_w_n.max()
    total = np.bincount(label_n, weights=np.exp(log_w_n - top), minlength=n_bins)
    with np.errstate(divide="ignore"):
        return -(np.log(total) + top)


def default_bin_edges(windows: list[DecorrelatedWindow], n_bins: int | None = None) -> np.ndarray:
    """Bins spanning every sample, two per window spacing unless ``n_bins`` is given."""
    values = np.concatenate([w.samples for w in windows])
    low, high = float(values.min()), float(values.max())
    if high <= low:
        raise AnalysisError(
            f"every sample of every window has the CV value {low}: there is no profile to "
            f"compute. Check that the windows' CV files hold the reaction coordinate"
        )
    if n_bins is None:
        centres = np.unique([w.centre for w in windows])
        spacing = float(np.median(np.diff(centres))) if len(centres) > 1 else (high - low) / 20
        n_bins = int(np.clip(math.ceil(2 * (high - low) / spacing), 10, 400))
    if n_bins < 2:
        raise AnalysisError(f"--bins {n_bins} is too few: use at least 2")
    # Widen by a hair so the extreme samples fall inside the outer bins.
    pad = 1e-9 * (high - low)
    return np.linspace(low - pad, high + pad, n_bins + 1)


# -- the whole analysis -------------------------------------------------------------------


@dataclass
class CampaignAnalysis:
    """PMFs of a campaign: all replicas together and each replica alone."""

    campaign: Campaign
    cv_name: str
    temperature_kelvin: float
    combined: PMF
    per_replica: dict[int, PMF]
    windows: list[DecorrelatedWindow]
    warnings: list[str]
    missing: dict[int, list[int]]


def analyze_campaign(samples: CampaignSamples, *, discard_frames: int | None = None,
                     n_bins: int | None = None, n_bootstraps: int = 0,
                     overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD) -> CampaignAnalysis:
    """Decorrelate every window and compute the PMF per replica and for all replicas.

    Windows too short to use are left out with a warning; neighbouring
    windows that overlap less than ``overlap_threshold`` are named in a
    warning, since the PMF between them is not determined by the data, and
    so is every hole in the sampled range (empty bins between filled ones)
    with the windows whose centres bracket it.
    """
    if discard_frames is not None and discard_frames < 0:
        raise AnalysisError(f"--discard-frames {discard_frames} is negative; use 0 or more")
    if n_bootstraps < 0 or n_bootstraps == 1:
        raise AnalysisError(f"--bootstrap {n_bootstraps}: use 0 (analytical errors) or at least 2")
    warnings = list(samples.warnings)
    windows, left_out = [], []
    for sample in samples.windows:
        try:
            windows.append(decorrelate_window(sample, discard_frames))
        except AnalysisError as error:
            left_out.append(str(error))
    if not windows:
        more = f" (and {len(left_out) - 1} more windows alike)" if len(left_out) > 1 else ""
        raise AnalysisError(f"no window has enough production frames to analyse: {left_out[0]}{more}")
    warnings += [f"left out: {reason}" for reason in left_out]
    edges = default_bin_edges(windows, n_bins)
    estimator = PMFEstimator(samples.temperature_kelvin, edges, n_bootstraps)
    combined = estimator.estimate(windows)
    per_replica = {}
    replicas = sorted({w.replica for w in windows})
    if len(replicas) > 1:
        for replica in replicas:
            per_replica[replica] = estimator.estimate([w for w in windows if w.replica == replica])
    else:
        per_replica[replicas[0]] = combined
    for scope, pmf in [("all replicas", combined)] + [
            (f"replica {r}", p) for r, p in per_replica.items() if len(replicas) > 1]:
        poor = pmf.poor_overlaps(overlap_threshold)
        if poor:
            pairs = sorted((min(a, b), max(a, b), value) for a, b, value in poor)
            listing = ", ".join(f"{window_tag(a)}-{window_tag(b)} ({value:.3f})" for a, b, value in pairs)
            warnings.append(
                f"{scope}: neighbouring windows overlap less than {overlap_threshold} (MBAR "
                f"overlap matrix), so the PMF between them is poorly determined: {listing}. "
                f"Add windows between them, lower the force constant, or run longer"
            )
        warnings += _hole_warnings(scope, pmf, samples.cv_name)
    return CampaignAnalysis(samples.campaign, samples.cv_name, samples.temperature_kelvin,
                            combined, per_replica, windows, warnings, samples.missing)


def _hole_warnings(scope: str, pmf: PMF, cv_name: str) -> list[str]:
    """One warning per range of the CV, inside the sampled range, where no sample fell."""
    warnings = []
    for low, high in pmf.holes():
        around = sorted(pmf.windows_around(low, high))
        names = [f"{window_tag(w)} ({cv_name}0 {centre:.3g})" for w, centre in around]
        listing = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        warnings.append(
            f"{scope}: no samples between {cv_name} {low:.3g} and {high:.3g}, a hole inside the "
            f"sampled range where windows {listing} should overlap; the PMF is blank there. Add "
            f"windows there or run longer"
        )
    return warnings


# -- outputs ---------------------------------------------------------------------------------


def write_outputs(analysis: CampaignAnalysis, results_root: Path | str) -> list[Path]:
    """Write the PMF CSV, the per-window table and the plots into the campaign's analysis dir.

    Returns
    -------
    list of Path
        The files written.
    """
    campaign = analysis.campaign
    root = Path(results_root)
    (root / campaign.analysis_dir).mkdir(parents=True, exist_ok=True)
    written = [
        _write_pmf_csv(analysis, root / campaign.pmf_csv),
        _write_window_table(analysis, root / campaign.analysis_file("windows.csv")),
    ]
    written += _plot(analysis, root, campaign)
    return written


def _fmt(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6g}"


def _write_pmf_csv(analysis: CampaignAnalysis, path: Path) -> Path:
    combined = analysis.combined
    replicas = sorted(analysis.per_replica)
    header = ["cv", "pmf_kcal_per_mol", "uncertainty_kcal_per_mol", "samples"]
    for r in replicas:
        header += [f"replica_{r}_pmf_kcal_per_mol", f"replica_{r}_uncertainty_kcal_per_mol"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, x in enumerate(combined.bin_centres):
            row = [f"{x:.6g}", _fmt(combined.pmf_kcal_per_mol[i]),
                   _fmt(combined.uncertainty_kcal_per_mol[i]), str(int(combined.samples_per_bin[i]))]
            for r in replicas:
                pmf = analysis.per_replica[r]
                row += [_fmt(pmf.pmf_kcal_per_mol[i]), _fmt(pmf.uncertainty_kcal_per_mol[i])]
            writer.writerow(row)
    return path


def _write_window_table(analysis: CampaignAnalysis, path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["replica", "window", "centre", "k_kcal_per_mol", "frames",
                         "discarded_frames", "statistical_inefficiency", "samples_used"])
        for w in sorted(analysis.windows, key=lambda w: (w.replica, w.window)):
            writer.writerow([w.replica, w.window, f"{w.centre:.6g}", f"{w.k_kcal_per_mol:.6g}",
                             w.n_frames, w.n_discarded, f"{w.statistical_inefficiency:.3f}",
                             len(w.samples)])
    return path


def _plot(analysis: CampaignAnalysis, root: Path, campaign: Campaign) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a pod or a CI runner
    import matplotlib.pyplot as plt

    paths = []
    cv = analysis.cv_name

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = analysis.combined.bin_centres
    if len(analysis.per_replica) > 1:
        for r, pmf in sorted(analysis.per_replica.items()):
            ax.plot(x, pmf.pmf_kcal_per_mol, lw=0.8, alpha=0.6, label=f"replica {r}")
    y, dy = analysis.combined.pmf_kcal_per_mol, analysis.combined.uncertainty_kcal_per_mol
    ax.fill_between(x, y - 2 * dy, y + 2 * dy, color="k", alpha=0.2, lw=0, label="±2σ")
    ax.plot(x, y, color="k", lw=1.8, label="all replicas")
    ax.set_xlabel(cv)
    ax.set_ylabel("PMF (kcal/mol)")
    ax.set_title(f"{campaign.name} at {analysis.temperature_kelvin:g} K")
    ax.legend(fontsize="small")
    fig.tight_layout()
    paths.append(_save(fig, root / campaign.analysis_file("pmf.png")))

    replicas = sorted({w.replica for w in analysis.windows})
    fig, axes = plt.subplots(len(replicas), 1, figsize=(7, 2.2 * len(replicas) + 0.8),
                             sharex=True, squeeze=False)
    edges = analysis.combined.bin_edges
    fine = np.linspace(edges[0], edges[-1], 3 * (len(edges) - 1) + 1)
    n_windows = max(w.window for w in analysis.windows) + 1
    colours = plt.get_cmap("viridis")
    for ax, replica in zip(axes[:, 0], replicas):
        for w in (w for w in analysis.windows if w.replica == replica):
            counts, _ = np.histogram(w.samples, bins=fine, density=True)
            ax.stairs(counts, fine, color=colours(w.window / max(n_windows - 1, 1)))
        ax.set_ylabel(f"replica {replica}\ndensity")
    axes[-1, 0].set_xlabel(cv)
    axes[0, 0].set_title("CV histograms per window (neighbours must overlap)")
    fig.tight_layout()
    paths.append(_save(fig, root / campaign.analysis_file("cv-histograms.png")))

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    overlap = analysis.combined.overlap
    image = ax.imshow(overlap, cmap="magma_r", vmin=0, vmax=max(float(overlap.max()), 1e-12))
    labels = [window_tag(w) for w in analysis.combined.state_windows]
    step = max(1, len(labels) // 16)
    ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=90, fontsize="small")
    ax.set_yticks(range(0, len(labels), step), labels[::step], fontsize="small")
    ax.set_xlabel("window")
    ax.set_ylabel("window")
    ax.set_title("MBAR overlap matrix (all replicas)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    paths.append(_save(fig, root / campaign.analysis_file("overlap.png")))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- command line -----------------------------------------------------------------------------


def summary_lines(analysis: CampaignAnalysis) -> list[str]:
    """A few lines for the terminal: what went in and where the profile lies."""
    pmf = analysis.combined
    finite = np.isfinite(pmf.pmf_kcal_per_mol)
    lines = [
        f"{analysis.campaign.name}: {len(analysis.windows)} windows from replicas "
        f"{', '.join(map(str, sorted({w.replica for w in analysis.windows})))}, "
        f"{sum(len(w.samples) for w in analysis.windows)} uncorrelated samples, "
        f"T = {analysis.temperature_kelvin:g} K",
    ]
    if finite.any():
        x = pmf.bin_centres[finite]
        y = pmf.pmf_kcal_per_mol[finite]
        lines.append(
            f"PMF along {analysis.cv_name} from {x.min():.3g} to {x.max():.3g}: minimum at "
            f"{x[np.argmin(y)]:.3g}, range {y.max():.2f} kcal/mol, median error "
            f"{np.nanmedian(pmf.uncertainty_kcal_per_mol):.2f} kcal/mol"
        )
    return lines


def build_command():
    """The ``analyze-umbrella-windows.py`` command (click), every option also read from the environment."""
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("-o", "--results-dir", "results_dir", type=click.Path(file_okay=False),
                  default="results", show_default=True, envvar="PROTBENCH_RESULTS_DIR",
                  help="Results root: read from it (unless --bucket) and write "
                       "{target}-{ff}/analysis/ into it.")
    @click.option("--target", required=True, envvar="PROTBENCH_TARGET", help="Benchmark target.")
    @click.option("--ff", required=True, envvar="PROTBENCH_FF", help="Force field name.")
    @click.option("-r", "--replica", "replicas", type=click.IntRange(min=1), multiple=True,
                  envvar="PROTBENCH_ANALYSIS_REPLICAS",
                  help="Analyse only this replica (repeat for several); all found by default.")
    @click.option("--bucket", default="", envvar="PROTBENCH_BUCKET",
                  help="Read CV and parameter files straight from this S3 bucket instead of "
                       "the results root. Keys and endpoint as for the launcher's preflight: the "
                       "rclone remote's section of the rclone config, else AWS_ACCESS_KEY_ID, "
                       "AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL.")
    @click.option("--bucket-prefix", default=BUCKET_PREFIX, show_default=True,
                  envvar="PROTBENCH_BUCKET_PREFIX", help="Key prefix of the results root in the bucket.")
    @click.option("--rclone-remote", default="nrp", show_default=True,
                  envvar="PROTBENCH_RCLONE_REMOTE",
                  help="Remote of the rclone config whose keys and endpoint reach the bucket.")
    @click.option("--endpoint-url", default=None, envvar="AWS_ENDPOINT_URL",
                  help="S3 endpoint of the bucket (overrides the rclone config's).")
    @click.option("--discard-frames", type=click.IntRange(min=0), default=None,
                  envvar="PROTBENCH_DISCARD_FRAMES",
                  help="Drop this many leading production frames of every window as "
                       "equilibration [default: detected per window].")
    @click.option("--bins", "n_bins", type=click.IntRange(min=2), default=None,
                  envvar="PROTBENCH_PMF_BINS",
                  help="Histogram bins along the CV [default: two per window spacing].")
    @click.option("--bootstrap", "n_bootstraps", type=click.IntRange(min=0), default=0,
                  show_default=True, envvar="PROTBENCH_BOOTSTRAP",
                  help="Bootstrap resamples for the uncertainties; 0 uses MBAR's analytical ones.")
    @click.option("--overlap-threshold", type=click.FloatRange(min=0, max=1),
                  default=DEFAULT_OVERLAP_THRESHOLD, show_default=True,
                  envvar="PROTBENCH_OVERLAP_THRESHOLD",
                  help="Warn about neighbouring windows whose MBAR overlap is below this.")
    def analyze(results_dir, target, ff, replicas, bucket, bucket_prefix, rclone_remote, endpoint_url,
                discard_frames, n_bins, n_bootstraps, overlap_threshold):
        """Compute the PMF along the CV of an umbrella campaign with MBAR.

        Writes {target}-{ff}-pmf.csv (CV, PMF and its uncertainty in kcal/mol,
        all replicas together and each alone), a per-window table and plots of
        the PMF, the per-window CV histograms and the overlap matrix.
        """
        import logging

        # pymbar's banners (no JAX, timeseries caveats) are not about this campaign.
        logging.getLogger("pymbar").setLevel(logging.ERROR)
        try:
            campaign = Campaign(target, ff)
            source = (BucketResults(bucket_client(endpoint_url, rclone_remote), bucket, bucket_prefix)
                      if bucket else LocalResults(results_dir))
            samples = load_campaign(source, campaign, tuple(replicas) or None)
            analysis = analyze_campaign(samples, discard_frames=discard_frames, n_bins=n_bins,
                                        n_bootstraps=n_bootstraps,
                                        overlap_threshold=overlap_threshold)
            written = write_outputs(analysis, results_dir)
        except (AnalysisError, ValueError) as error:
            raise click.ClickException(str(error)) from None
        for warning in analysis.warnings:
            click.echo(f"warning: {warning}", err=True)
        for line in summary_lines(analysis):
            click.echo(line)
        for path in written:
            click.echo(f"wrote {path}")

    return analyze
