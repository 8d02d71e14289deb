"""The geometry of a collective variable: a line, or a circle for a periodic CV such as a torsion.

Every piece of the analysis that measures along the CV asks a :class:`CVAxis`:
the bias energies use its minimum-image :meth:`~CVAxis.difference`, samples
and centres are :meth:`~CVAxis.wrap`-ped into one period, the histogram bins
and KDE grid cover one period exactly (:meth:`~CVAxis.grid_edges`), the KDE
kernel wraps round (:meth:`~CVAxis.kernel_density`), and holes and
neighbouring windows are found round the circle (:meth:`~CVAxis.empty_runs`,
:meth:`~CVAxis.neighbour_pairs`). A CV without a period (Q, a distance) is
the line, and every method then does what a line needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ProtbenchError

#: Windows go all round a periodic CV when no gap between neighbouring centres
#: exceeds this many median gaps: one or two missing windows leave holes, a
#: larger gap is the part of the circle the campaign never meant to sample.
COVERING_GAP_FACTOR = 3.0

#: At most this many histogram bins or KDE grid points.
MAX_GRID_POINTS = 20000


class AxisError(ProtbenchError):
    """A period, range or grid the analysis cannot use; the message names the setting and the fix."""


@dataclass(frozen=True)
class CVAxis:
    """A CV along a line (``period`` None) or round a circle of ``period`` starting at ``start``.

    Parameters
    ----------
    period : float, optional
        In the CV's units: 360 for degrees, 2π for radians.
    start : float, optional
        Where the period begins (``--cv-min``); ``-period/2`` by default.
    """

    period: float | None = None
    start: float | None = None

    def __post_init__(self):
        if self.period is not None and not (math.isfinite(self.period) and self.period > 0):
            raise AxisError(f"--period {self.period} must be a positive number in the CV's units "
                            f"(360 for degrees, 6.283185307179586 for radians)")
        if self.start is not None:
            if self.period is None:
                raise AxisError(f"--cv-min {self.start} needs --period: only a periodic CV is wrapped "
                                f"into a range; drop --cv-min or give the period")
            if not math.isfinite(self.start):
                raise AxisError(f"--cv-min {self.start} must be a finite number")

    @property
    def periodic(self) -> bool:
        return self.period is not None

    @property
    def low(self) -> float:
        """Where one period begins (``-inf`` on a line)."""
        if not self.periodic:
            return -math.inf
        return self.start if self.start is not None else -self.period / 2

    @property
    def high(self) -> float:
        return self.low + self.period if self.periodic else math.inf

    def describe(self) -> str:
        if not self.periodic:
            return "not periodic"
        return f"periodic, period {self.period:g} from {self.low:g} to {self.high:g}"

    # -- points ---------------------------------------------------------------------------------

    def wrap(self, x) -> np.ndarray:
        """``x`` moved into ``[low, low + period)`` by whole periods (unchanged on a line)."""
        x = np.asarray(x, dtype=float)
        if not self.periodic:
            return x
        wrapped = self.low + np.mod(x - self.low, self.period)
        # mod can round a hair below a period up to the period itself.
        return np.where(wrapped >= self.high, wrapped - self.period, wrapped)

    def difference(self, x, centre) -> np.ndarray:
        """``x - centre``; round a circle the minimum image, in ``[-period/2, period/2]``."""
        d = np.asarray(x, dtype=float) - np.asarray(centre, dtype=float)
        if self.periodic:
            d = d - self.period * np.round(d / self.period)
        return d

    def contains(self, x, low: float, high: float) -> np.ndarray:
        """Whether ``x`` lies in ``(low, high]``; round a circle ``low > high`` wraps past the seam."""
        x = self.wrap(x)
        if self.periodic and low > high:
            return (x > low) | (x <= high)
        return (x > low) & (x <= high)

    # -- windows --------------------------------------------------------------------------------

    def gaps(self, centres) -> np.ndarray:
        """Gaps between neighbouring distinct centres; round a circle the one across the seam too."""
        c = np.unique(self.wrap(centres))
        gaps = np.diff(c)
        if self.periodic and len(c):
            gaps = np.append(gaps, c[0] + self.period - c[-1])
        return gaps

    def spacing(self, centres, sampled_range: float) -> float:
        """Median gap between window centres (a twentieth of the sampled range for one window)."""
        gaps = self.gaps(centres)
        gaps = gaps[gaps > 0]
        if len(np.unique(self.wrap(centres))) < 2 or not len(gaps):
            return sampled_range / 20
        return float(np.median(gaps))

    def covers(self, centres) -> bool:
        """Whether the windows go all round a periodic CV (no gap over :data:`COVERING_GAP_FACTOR` median gaps)."""
        if not self.periodic:
            return False
        gaps = self.gaps(centres)
        return len(gaps) > 2 and gaps.max() <= COVERING_GAP_FACTOR * np.median(gaps)

    def outside(self, centres) -> float | None:
        """A point of the circle no window is meant to sample: the middle of the widest gap.

        None on a line, or when the windows go all round.
        """
        if not self.periodic or self.covers(centres):
            return None
        c = np.unique(self.wrap(centres))
        gaps = self.gaps(centres)
        i = int(np.argmax(gaps))
        return float(self.wrap(c[i] + gaps[i] / 2))

    def neighbour_pairs(self, n_states: int, centres) -> list[tuple[int, int]]:
        """Pairs of neighbouring states, in order of centre; round a covered circle, the last with the first."""
        pairs = [(i, i + 1) for i in range(n_states - 1)]
        if self.covers(centres) and n_states > 2:
            pairs.append((n_states - 1, 0))
        return pairs

    # -- grids ----------------------------------------------------------------------------------

    def grid_edges(self, values, centres, n_bins: int | None = None,
                   bin_width: float | None = None) -> np.ndarray:
        """Bins over the samples: ``bin_width`` wide, ``n_bins`` of them, or two per window spacing.

        Round a circle they span exactly one period (a width that does not
        divide it is rounded to one that does); on a line they span every
        sample, widened by a hair so the extreme samples fall inside.
        """
        values = np.asarray(values, dtype=float)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            raise AxisError(
                f"every sample of every window has the CV value {low}: there is no profile to "
                f"compute. Check that the windows' CV files hold the reaction coordinate")
        span = self.period if self.periodic else high - low
        if bin_width is not None:
            if not bin_width > 0:
                raise AxisError(f"--bin-width {bin_width} must be positive")
            n_bins = max(2, int(round(span / bin_width)) if self.periodic else int(math.ceil(span / bin_width)))
            if n_bins > MAX_GRID_POINTS:
                raise AxisError(f"--bin-width {bin_width} makes {n_bins} bins over {span:.3g}; use a wider one")
        elif n_bins is None:
            n_bins = int(np.clip(math.ceil(2 * span / self.spacing(centres, high - low)), 10,
                                 MAX_GRID_POINTS if self.periodic else 400))
        if n_bins < 2:
            raise AxisError(f"--bins {n_bins} is too few: use at least 2")
        if self.periodic:
            return np.linspace(self.low, self.high, n_bins + 1)
        if bin_width is not None:
            middle = 0.5 * (low + high)
            return middle + bin_width * (np.arange(n_bins + 1) - n_bins / 2)
        pad = 1e-9 * (high - low)
        return np.linspace(low - pad, high + pad, n_bins + 1)

    def empty_runs(self, edges, counts, centres) -> list[tuple[float, float]]:
        """``(low, high)`` of each run of empty bins lying between filled ones: the holes.

        On a line the empty bins at either end are not holes (the sampled
        range ends there). Round a circle every empty run is a hole, except,
        when the windows do not go all round, the run holding the middle of
        their widest gap; a hole across the seam has ``low > high``.
        """
        counts = np.asarray(counts)
        filled = np.flatnonzero(counts > 0)
        n = len(counts)
        if len(filled) < 2 and not (self.periodic and len(filled) == 1):
            return []
        if not self.periodic:
            return [(float(edges[a + 1]), float(edges[b])) for a, b in zip(filled[:-1], filled[1:]) if b > a + 1]
        outside = self.outside(centres)
        holes = []
        for a, b in zip(filled, np.roll(filled, -1)):
            if (b - a) % n == 1 or (len(filled) == 1 and n == 1):
                continue
            low, high = float(edges[(a + 1) % n]), float(edges[b])
            if outside is not None and self.contains(outside, low - 1e-12 * self.period, high):
                continue
            holes.append((low, high))
        return sorted(holes)

    def around(self, low: float, high: float, centres) -> list[int]:
        """Indices of the centres inside ``(low, high)`` and of the nearest one on either side."""
        c = self.wrap(centres)
        if not self.periodic:
            inside = np.flatnonzero((c >= low) & (c <= high))
            below = np.flatnonzero(c < low)
            above = np.flatnonzero(c > high)
            below = below[np.argsort(c[below])][-1:]
            above = above[np.argsort(c[above])][:1]
            return sorted(set(inside) | set(below) | set(above))
        inside = self.contains(c, low, high) | np.isclose(c, low)
        others = np.flatnonzero(~inside)
        chosen = set(np.flatnonzero(inside))
        if len(others):
            chosen.add(int(others[np.argmin(np.mod(low - c[others], self.period))]))
            chosen.add(int(others[np.argmin(np.mod(c[others] - high, self.period))]))
        return sorted(chosen)

    # -- densities ------------------------------------------------------------------------------

    def kernel_density(self, x, weights, points, bandwidth: float) -> np.ndarray:
        """Gaussian kernel density (unnormalised) of weighted samples at ``points``.

        The weighted samples are binned a twentieth of the bandwidth apart and
        convolved with the kernel out to eight widths, then read at
        ``points`` by linear interpolation: a hundred times faster than
        summing kernels, and the same density to ~1e-3 of itself within two
        kernel widths of the samples, ~1e-2 at four. Round a circle the bins
        and the convolution wrap, so the kernel of a sample near the seam
        reaches across it.
        """
        step_goal = bandwidth / 20
        x = np.asarray(x, dtype=float)
        points = np.asarray(points, dtype=float)
        reach = np.arange(-160, 161)
        if self.periodic:
            n_cells = max(int(math.ceil(self.period / step_goal)), 1)
            step = self.period / n_cells
            cells = np.bincount(np.floor((self.wrap(x) - self.low) / step).astype(int) % n_cells,
                                weights=weights, minlength=n_cells)
            # Circular convolution by FFT: a kernel longer than the period wraps onto itself.
            kernel = np.zeros(n_cells)
            np.add.at(kernel, reach % n_cells, np.exp(-0.5 * (reach * step / bandwidth) ** 2))
            # (FFT round-off leaves -1e-17 where no sample reaches: that is no density.)
            smooth = np.maximum(np.fft.irfft(np.fft.rfft(cells) * np.fft.rfft(kernel), n_cells), 0.0)
            centres = self.low + step * (np.arange(n_cells) + 0.5)
            grid = np.concatenate([centres[-1:] - self.period, centres, centres[:1] + self.period])
            values = np.concatenate([smooth[-1:], smooth, smooth[:1]])
            return np.interp(self.wrap(points), grid, values)
        step = step_goal
        low = min(points.min(), x.min()) - 9 * bandwidth
        n_cells = int(math.ceil((max(points.max(), x.max()) + 9 * bandwidth - low) / step)) + 1
        cells = np.bincount(((x - low) / step + 0.5).astype(int), weights=weights, minlength=n_cells)
        kernel = np.exp(-0.5 * (reach * step / bandwidth) ** 2)
        smooth = np.convolve(cells, kernel, mode="same")
        return np.interp(points, low + step * np.arange(len(smooth)), smooth)

    def images(self, x, reach: float) -> tuple[np.ndarray, np.ndarray]:
        """Samples within ``reach`` of the seam copied one period across it, and their indices.

        A kernel density of the samples and these images, read within one
        period, is the density of a kernel that wraps round.
        """
        x = self.wrap(x)
        if not self.periodic:
            return np.zeros(0), np.zeros(0, dtype=int)
        near_low = np.flatnonzero(x < self.low + reach)
        near_high = np.flatnonzero(x > self.high - reach)
        return (np.concatenate([x[near_low] + self.period, x[near_high] - self.period]),
                np.concatenate([near_low, near_high]))


LINE = CVAxis()
