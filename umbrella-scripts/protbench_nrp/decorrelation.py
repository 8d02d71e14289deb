"""One window's frames in, its uncorrelated samples out: equilibration dropped, then subsampled.

:func:`decorrelate_window` takes any window that has ``replica``, ``window``,
``label``, ``centre``, ``k_kcal_per_mol``, ``production_length_ns`` and a
``series`` with ``values`` (a campaign's :class:`~protbench_nrp.cvfiles.WindowSamples`,
or a line of a WHAM metadata file, :class:`~protbench_nrp.metadata.SeriesWindow`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .cvaxis import LINE, CVAxis
from .cvfiles import AnalysisError
from .layout import window_tag

#: A window needs this many production frames left after discarding its
#: equilibration for a statistical inefficiency to mean anything.
MIN_FRAMES = 10

#: Equilibration detection scans at most this many candidate start frames per
#: window: scanning every frame costs O(N^2) and moves the answer by a frame.
EQUILIBRATION_SCAN_POINTS = 200


def _timeseries():
    """pymbar's timeseries on first use: status tools import the analysis and need none of it."""
    from pymbar import timeseries

    return timeseries


@dataclass(frozen=True)
class DecorrelatedWindow:
    """The uncorrelated samples of one window that go into MBAR.

    Attributes
    ----------
    k_kcal_per_mol : float
        The bias is ``k * (cv - centre)**2`` (no factor 1/2).
    n_frames : int
        Production frames read.
    n_discarded : int
        Leading frames dropped as equilibration.
    statistical_inefficiency : float
        g of the kept part: one sample in ``g`` frames is used.
    samples : numpy.ndarray
        The CV values used.
    frames : numpy.ndarray of int
        Index of each sample among the window's production frames (for
        forward and reverse convergence and the upstream-style files).
    production_length_ns : float
        The production length the window was launched with (NaN when unknown).
    source : str
        Where its frames came from (a metadata line and path; empty for a campaign).
    """

    replica: int
    window: int
    centre: float
    k_kcal_per_mol: float
    n_frames: int
    n_discarded: int
    statistical_inefficiency: float
    samples: np.ndarray
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    production_length_ns: float = math.nan
    source: str = ""

    @property
    def label(self) -> str:
        return f"replica {self.replica} window {window_tag(self.window)}"

    @property
    def effective_samples(self) -> float:
        """Independent samples in the kept frames: kept frames / g."""
        return (self.n_frames - self.n_discarded) / self.statistical_inefficiency

    def part(self, low_fraction: float, high_fraction: float) -> "DecorrelatedWindow":
        """Only the samples taken within ``[low, high)`` fractions of the production frames."""
        keep = (self.frames >= low_fraction * self.n_frames) & (self.frames < high_fraction * self.n_frames)
        return replace(self, samples=self.samples[keep], frames=self.frames[keep])


def decorrelate_window(sample, discard_frames: int | None = None, axis: CVAxis = LINE) -> DecorrelatedWindow:
    """Drop the equilibration part of a window and keep uncorrelated frames.

    Parameters
    ----------
    sample : WindowSamples or SeriesWindow
    discard_frames : int, optional
        Leading frames to drop; detected with
        :func:`pymbar.timeseries.detect_equilibration` when omitted.
    axis : CVAxis
        Round a periodic CV the series is read as its minimum-image distance
        from the window's centre, so a window whose samples cross the seam
        (179 then -179 degrees) is a continuous series, not a jump of a period.

    Raises
    ------
    AnalysisError
        When fewer than :data:`MIN_FRAMES` frames would remain.
    """
    timeseries = _timeseries()
    values = axis.difference(sample.series.values, sample.centre) if axis.periodic else sample.series.values
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
    indices = np.asarray(indices, dtype=int)
    chosen = axis.wrap(sample.series.values[start + indices]) if axis.periodic else np.asarray(kept[indices])
    return DecorrelatedWindow(sample.replica, sample.window, float(axis.wrap(sample.centre)),
                              float(sample.k_kcal_per_mol), n, start, g, chosen, start + indices,
                              float(sample.production_length_ns), getattr(sample, "source_line", ""))
