"""Umbrella windows sampled exactly from a known potential of mean force.

Each window's CV series is drawn from the biased distribution
``exp(-(F(x) + k (x - x0)^2) / kT)`` by inverting its CDF on a fine grid. The
draws are correlated in time through a Gaussian copula (an AR(1) process
mapped through the normal CDF), so the marginal distribution is exact while
subsampling by statistical inefficiency has real work to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import lfilter
from scipy.integrate import trapezoid
from scipy.special import ndtr

from protbench_nrp.science import MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K
from protbench_nrp.layout import Campaign
from protbench_nrp.records import UmbrellaParameters

CV_HEADER = '#"Step" "CV"\n'


@dataclass(frozen=True)
class DoubleWell:
    """``F(x) = barrier * ((x - middle)^2 / half_width^2 - 1)^2 + tilt * (x - middle)`` in kcal/mol.

    Without tilt: minima (F = 0) at ``middle ± half_width``, a barrier of
    ``barrier`` at ``middle``. A negative tilt makes the high-CV (folded) well the deeper.
    """

    barrier_kcal_per_mol: float = 2.0
    middle: float = 0.7
    half_width: float = 0.15
    tilt_kcal_per_mol: float = 0.0

    def __call__(self, x):
        s = (np.asarray(x, dtype=float) - self.middle) / self.half_width
        return (self.barrier_kcal_per_mol * (s * s - 1.0) ** 2
                + self.tilt_kcal_per_mol * (np.asarray(x, dtype=float) - self.middle))


@dataclass(frozen=True)
class SyntheticCampaign:
    root: Path
    campaign: Campaign
    pmf: DoubleWell
    centres: tuple[float, ...]
    k_kcal_per_mol: float
    temperature_kelvin: float
    replicas: tuple[int, ...]
    n_frames: int


def sample_window(pmf, centre: float, k_kcal_per_mol: float, temperature_kelvin: float,
                  n_frames: int, rng: np.random.Generator, correlation: float = 0.0,
                  grid=(0.0, 1.4, 40001)) -> np.ndarray:
    """``n_frames`` draws from the biased distribution of one window."""
    x = np.linspace(*grid)
    beta = 1.0 / (MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * temperature_kelvin)
    log_p = -beta * (pmf(x) + k_kcal_per_mol * (x - centre) ** 2)
    return _correlated_draws(x, log_p, n_frames, correlation, rng)


def write_cv_file(path: Path, values, steps_per_frame: int = 25, torn_tail: str = "") -> None:
    """Write a CV file as the window script does; ``torn_tail`` appends a partial line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = steps_per_frame * np.arange(1, len(values) + 1)
    body = "".join(f"{s} {v:.6f}\n" for s, v in zip(steps, values))
    path.write_text(CV_HEADER + body + torn_tail)


def write_parameters(root: Path, campaign: Campaign, replica: int, window: int, centre: float,
                     k_kcal_per_mol: float, temperature_kelvin: float, n_windows: int,
                     n_frames: int, frame_ps: float = 100.0, **changes) -> None:
    fields = dict(target=campaign.target, ff=campaign.ff, replica=replica, window=window,
                  n_windows=n_windows, cv_name="Q", centre=centre, k_kcal_per_mol=k_kcal_per_mol,
                  temperature_kelvin=temperature_kelvin, pressure_atm=0.0, timestep_fs=4.0,
                  frame_ps=frame_ps, production_length_ns=n_frames * frame_ps / 1000.0,
                  equil_length_ns=1.0)
    fields.update(changes)
    UmbrellaParameters(**fields).write(root / campaign.window_files(replica, window).parameters)


def write_synthetic_campaign(root: Path, *, replicas=(1, 2, 3), n_windows: int = 16,
                             cv_start: float = 1.0, cv_end: float = 0.4,
                             k_kcal_per_mol: float = 400.0, temperature_kelvin: float = 300.0,
                             n_frames: int = 2000, correlation: float = 0.8, seed: int = 1,
                             pmf: DoubleWell = DoubleWell(),
                             campaign: Campaign = Campaign("synthetic", "double-well")
                             ) -> SyntheticCampaign:
    """Write CV files and parameter records of a whole campaign into the results layout."""
    rng = np.random.default_rng(seed)
    centres = tuple(cv_start + (cv_end - cv_start) * w / (n_windows - 1) for w in range(n_windows))
    for replica in replicas:
        for window, centre in enumerate(centres):
            values = sample_window(pmf, centre, k_kcal_per_mol, temperature_kelvin, n_frames, rng,
                                   correlation)
            write_cv_file(root / campaign.window_files(replica, window).cv_timeseries, values)
            write_parameters(root, campaign, replica, window, centre, k_kcal_per_mol,
                             temperature_kelvin, n_windows, n_frames)
    return SyntheticCampaign(root, campaign, pmf, centres, k_kcal_per_mol, temperature_kelvin,
                             tuple(replicas), n_frames)


#: The CV range the synthetic windows are drawn on (see :func:`sample_window`).
SAMPLED_RANGE = (0.0, 1.4)


def exact_folding_free_energy(pmf, boundary: float, temperature_kelvin: float,
                              cv_range=SAMPLED_RANGE, points: int = 200001) -> float:
    """``G(x > boundary) - G(x < boundary)`` in kcal/mol: the integrals of ``exp(-F/kT)`` on each side."""
    kt = MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * temperature_kelvin
    x = np.linspace(*cv_range, points)
    boltzmann = np.exp(-(pmf(x) - pmf(x).min()) / kt)
    folded = trapezoid(np.where(x > boundary, boltzmann, 0.0), x)
    unfolded = trapezoid(np.where(x <= boundary, boltzmann, 0.0), x)
    return float(-kt * np.log(folded / unfolded))


def bin_averaged_pmf(pmf, bin_edges, temperature_kelvin: float) -> np.ndarray:
    """The PMF a histogram estimator converges to: ``-kT ln <exp(-F/kT)>`` over each bin."""
    kt = MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * temperature_kelvin
    values = []
    for low, high in zip(bin_edges[:-1], bin_edges[1:]):
        x = np.linspace(low, high, 401)
        values.append(-kt * np.log(np.mean(np.exp(-pmf(x) / kt))))
    return np.array(values)


# -- periodic CVs and windows from other engines ---------------------------------------------


@dataclass(frozen=True)
class Torsion:
    """``F(phi) = a cos(3 phi) + b cos(phi)`` in kcal/mol, ``phi`` in degrees or radians.

    With ``a = 1.5, b = 1.0``: minima near ±60° (gauche) and 180° (trans), the
    trans one the deeper, barriers at 0° (the highest) and ±120°.
    """

    a_kcal_per_mol: float = 1.5
    b_kcal_per_mol: float = 1.0
    degrees: bool = True

    @property
    def period(self) -> float:
        return 360.0 if self.degrees else 2 * np.pi

    def __call__(self, phi):
        radians = np.radians(phi) if self.degrees else np.asarray(phi, dtype=float)
        return self.a_kcal_per_mol * np.cos(3 * radians) + self.b_kcal_per_mol * np.cos(radians)


def wrap(x, period: float, low: float):
    """``x`` moved into ``[low, low + period)``."""
    return low + np.mod(np.asarray(x, dtype=float) - low, period)


def sample_periodic_window(pmf: Torsion, centre: float, spring_kcal_per_mol: float, temperature_kelvin: float,
                           n_frames: int, rng: np.random.Generator, correlation: float = 0.0,
                           low: float | None = None) -> np.ndarray:
    """``n_frames`` exact draws of a window biased by ``½K (phi - centre)^2``, minimum image, wrapped.

    One period centred on the window, ``centre ± period/2``, is the circle cut
    where the window is least likely, so there ``phi - centre`` is the minimum
    image and the draws cross ±180° as they would.
    """
    period = pmf.period
    x = np.linspace(centre - period / 2, centre + period / 2, 40001)
    beta = 1.0 / (MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * temperature_kelvin)
    log_p = -beta * (pmf(x) + 0.5 * spring_kcal_per_mol * (x - centre) ** 2)
    return wrap(_correlated_draws(x, log_p, n_frames, correlation, rng), period, -period / 2 if low is None else low)


def exact_state_free_energy(pmf, first: tuple[float, float], second: tuple[float, float],
                            temperature_kelvin: float, period: float, low: float, points: int = 720001) -> float:
    """``G(second) - G(first)`` in kcal/mol for ranges ``(lo, hi]`` of one period (``lo > hi`` wraps)."""
    kt = MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * temperature_kelvin
    x = np.linspace(low, low + period, points)
    boltzmann = np.exp(-(pmf(x) - pmf(x).min()) / kt)

    def inside(lo, hi):
        return ((x > lo) | (x <= hi)) if lo > hi else ((x > lo) & (x <= hi))

    return float(-kt * np.log(trapezoid(np.where(inside(*second), boltzmann, 0.0), x)
                              / trapezoid(np.where(inside(*first), boltzmann, 0.0), x)))


#: A GROMACS ``.xvg`` header as ``gmx`` tools write them: ``#`` comment lines, then ``@`` xmgrace lines.
XVG_HEADER = """# This file was created {date}
# Created by:
#                      :-) GROMACS - gmx pullx, 2023.3 (-:
#
# Executable:   /usr/local/gromacs/bin/gmx
# Command line:
#   gmx pullx -f window{window:02d}.xtc -s window{window:02d}.tpr -o window{window:02d}.xvg
# gmx pullx is part of G R O M A C S:
#
@    title "Pull coordinate"
@    xaxis  label "Time (ps)"
@    yaxis  label "Position (deg)"
@TYPE xy
@ view 0.15, 0.15, 0.75, 0.85
@ legend on
@ s0 legend "1"
"""

#: A PLUMED ``COLVAR`` header: the field names, then the periodic domain of phi.
COLVAR_HEADER = """#! FIELDS time psi phi restraint.bias
#! SET min_psi -pi
#! SET max_psi pi
#! SET min_phi -pi
#! SET max_phi pi
"""


def write_engine_windows(directory: Path, pmf: Torsion, centres, spring_kcal_per_mol: float,
                         temperature_kelvin: float, n_frames: int, *, engine: str = "gromacs",
                         seed: int = 1, correlation: float = 0.5, metadata_name: str = "windows.meta",
                         temperature_on_lines: bool = True) -> Path:
    """Time series of each window as GROMACS (``.xvg``, time then phi) or PLUMED (``COLVAR``,
    phi in the third field) writes them, and the WHAM metadata file naming them; returns its path."""
    rng = np.random.default_rng(seed)
    series = directory / "series"
    series.mkdir(parents=True, exist_ok=True)
    lines = ["# path centre K correlation_time temperature", ""]
    for window, centre in enumerate(centres):
        values = sample_periodic_window(pmf, centre, spring_kcal_per_mol, temperature_kelvin, n_frames, rng,
                                        correlation)
        times = 2.0 * np.arange(n_frames)
        if engine == "gromacs":
            name = f"window{window:02d}.xvg"
            text = XVG_HEADER.format(date="Tue Mar  5 10:00:00 2024", window=window) + "".join(
                f"{t:.4f}\t{v:.5f}\n" for t, v in zip(times, values))
        else:
            name = f"COLVAR.{window}"
            psi = rng.uniform(-np.pi, np.pi, n_frames)
            bias = 0.5 * spring_kcal_per_mol * (values - centre) ** 2
            text = COLVAR_HEADER + "".join(f" {t:.6f} {p:.6f} {v:.6f} {b:.6f}\n"
                                           for t, p, v, b in zip(times, psi, values, bias))
        (series / name).write_text(text)
        temperature = f" {temperature_kelvin:g}" if temperature_on_lines else ""
        lines.append(f"series/{name} {centre:.10g} {spring_kcal_per_mol:.10g} 5{temperature}")
    metadata = directory / metadata_name
    metadata.write_text("\n".join(lines) + "\n")
    return metadata


def _correlated_draws(x: np.ndarray, log_p: np.ndarray, n_frames: int, correlation: float,
                      rng: np.random.Generator) -> np.ndarray:
    """``n_frames`` exact draws from the density ``exp(log_p)`` on the grid ``x``, AR(1)-correlated."""
    p = np.exp(log_p - log_p.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(x))])
    cdf /= cdf[-1]
    # z[t] = c z[t-1] + sqrt(1 - c^2) e[t] with z[0] = e[0]: stationary N(0, 1).
    noise = rng.standard_normal(n_frames)
    scale = np.sqrt(1.0 - correlation ** 2)
    noise[0] /= scale
    z = lfilter([scale], [1.0, -correlation], noise)
    return np.interp(ndtr(z), cdf, x)
