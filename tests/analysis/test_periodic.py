"""Periodic CVs: torsion PMFs ``A cos 3φ + B cos φ`` sampled exactly in windows that straddle ±180°
come back within 0.15 kcal/mol, in degrees and in radians, and so do free-energy differences between
ranges that wrap round the seam."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from protbench_nrp.analysis import analyze_campaign
from protbench_nrp.cvaxis import AxisError, CVAxis
from protbench_nrp.decorrelation import DecorrelatedWindow
from protbench_nrp.mbar import StateSystem
from protbench_nrp.science import MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K
from protbench_nrp.metadata import read_metadata
from protbench_nrp.states import StateError, parse_states

from .synthetic import Torsion, exact_state_free_energy, write_engine_windows

TEMPERATURE = 300.0
N_WINDOWS = 12
#: Uncorrelated frames per window: enough for every bin to be within 0.15 kcal/mol.
N_FRAMES = 3000
BOOTSTRAPS = 20
#: Near the gauche minima and the trans minimum; trans runs across the seam.
GAUCHE, TRANS = (0.0, 1 / 3), (1 / 3, -1 / 3)  # fractions of the period
ACCURACY_KCAL_PER_MOL = 0.15


def centres(period: float) -> np.ndarray:
    # Half a spacing off the seam, so that two windows straddle it.
    return -period / 2 + period * (np.arange(N_WINDOWS) + 0.5) / N_WINDOWS


def spring(period: float) -> float:
    """``K`` of ½K(x−c)² that makes a window ~0.6 spacings wide at 300 K."""
    sigma = 0.6 * period / N_WINDOWS
    return 0.596 / sigma ** 2


@pytest.fixture(scope="module", params=["degrees", "radians"])
def torsion(request, tmp_path_factory):
    """Degrees from GROMACS ``.xvg`` files, radians from PLUMED ``COLVAR`` files (phi in field 3)."""
    degrees = request.param == "degrees"
    pmf = Torsion(degrees=degrees)
    metadata = write_engine_windows(tmp_path_factory.mktemp(request.param), pmf, centres(pmf.period),
                                    spring(pmf.period), TEMPERATURE, N_FRAMES,
                                    engine="gromacs" if degrees else "plumed", correlation=0.0, seed=11)
    axis = CVAxis(pmf.period)
    samples = read_metadata(metadata, cv_column=2 if degrees else "phi", axis=axis)
    states = parse_states([f"gauche={GAUCHE[0] * pmf.period:g}:{GAUCHE[1] * pmf.period:.10g}",
                           f"trans={TRANS[0] * pmf.period:.10g}:{TRANS[1] * pmf.period:.10g}"], axis)
    analyses = {method: analyze_campaign(samples, method=method, n_bootstraps=BOOTSTRAPS, states=states)
                for method in ("histogram", "kde")}
    return pmf, samples, analyses


def sampled_errors(pmf: Torsion, profile) -> np.ndarray:
    """The PMF minus the exact one, aligned by the mean offset, where bins hold 30 samples or more."""
    x = profile.bin_centres
    counts = profile.samples_per_bin
    if profile.method == "kde":  # the histogram's coverage bins around each grid point
        edges = profile.coverage_edges
        counts = profile.coverage_counts[np.clip(np.digitize(x, edges) - 1, 0, len(edges) - 2)]
    used = np.isfinite(profile.pmf_kcal_per_mol) & (counts >= 30)
    error = profile.pmf_kcal_per_mol[used] - pmf(x[used])
    return error - error.mean()


@pytest.mark.parametrize("method", ["histogram", "kde"])
def test_the_torsion_pmf_comes_back_within_0_15_kcal_per_mol_round_the_whole_circle(torsion, method):
    pmf, samples, analyses = torsion
    profile = analyses[method].combined
    # Windows straddle the seam: one window's samples lie on both sides of it.
    near = [w for w in samples.windows if abs(abs(w.centre) - pmf.period / 2) < pmf.period / N_WINDOWS]
    assert near and all(w.series.values.min() < -0.45 * pmf.period and w.series.values.max() > 0.45 * pmf.period
                        for w in near)
    # The profile spans one period and every point of it is sampled.
    assert profile.bin_edges[0] == pytest.approx(-pmf.period / 2)
    assert profile.bin_edges[-1] == pytest.approx(pmf.period / 2)
    assert np.isfinite(profile.pmf_kcal_per_mol).all()
    error = sampled_errors(pmf, profile)
    assert len(error) >= 0.95 * len(profile.bin_centres)
    print(f"{method}: largest error {np.max(np.abs(error)):.3f}, RMS {np.sqrt(np.mean(error ** 2)):.3f} kcal/mol")
    assert np.max(np.abs(error)) < ACCURACY_KCAL_PER_MOL, np.round(error, 3)
    assert analyses[method].warnings == []


def test_the_kernel_wraps_round_the_seam():
    # Samples just below +180°: their kernels reach past the seam to -180°, as summing
    # each kernel with its images one period either side says; on a line they stop.
    x = np.random.default_rng(2).uniform(176.0, 180.0, 500)
    points = np.linspace(-180.0, 180.0, 361)
    h = 1.5

    def summed(shifts):
        return sum(np.exp(-0.5 * ((points[:, None] - x[None, :] - s) / h) ** 2).sum(axis=1) for s in shifts)

    def close(density, exact):
        # To ~1e-3 of itself where the density is within a tenth of its peak, ~1e-2 out to 1e-4 of it.
        for floor, tolerance in ((0.1, 2e-3), (1e-4, 1.5e-2)):
            shown = exact > floor * exact.max()
            np.testing.assert_allclose(density[shown], exact[shown], rtol=tolerance)
        assert np.all(density[exact < 1e-9 * exact.max()] < 1e-6 * exact.max())

    exact = summed((-360.0, 0.0, 360.0))
    circle = CVAxis(360.0).kernel_density(x, np.ones_like(x), points, h)
    close(circle, exact)
    assert circle[points == -179.0][0] > 0.05 * circle.max()
    line = CVAxis().kernel_density(x, np.ones_like(x), points, h)
    close(line, summed((0.0,)))
    assert line[points == -179.0][0] == 0.0


def test_bias_energies_take_the_minimum_image_across_the_seam():
    window = DecorrelatedWindow(1, 0, 172.5, 0.01, 3, 0, 1.0, np.array([-179.0, 170.0, 0.0]))
    kt = MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * 300.0
    circle = StateSystem([window], kt, CVAxis(360.0))
    np.testing.assert_allclose(circle.u_kn[0], 0.01 * np.array([8.5, 2.5, 172.5]) ** 2 / kt)
    line = StateSystem([window], kt)
    np.testing.assert_allclose(line.u_kn[0], 0.01 * np.array([351.5, 2.5, 172.5]) ** 2 / kt)


@pytest.mark.parametrize("method", ["histogram", "kde"])
def test_a_free_energy_difference_across_the_seam_matches_the_exact_integral(torsion, method):
    pmf, _, analyses = torsion
    analysis = analyses[method]
    dg = analysis.delta_g
    exact = exact_state_free_energy(pmf, tuple(f * pmf.period for f in GAUCHE),
                                    tuple(f * pmf.period for f in TRANS), TEMPERATURE, pmf.period, -pmf.period / 2)
    assert exact < -1.0  # trans is the deeper: the check has teeth
    assert abs(dg.dg_kcal_per_mol - exact) < ACCURACY_KCAL_PER_MOL, (dg, exact)
    assert abs(dg.dg_kcal_per_mol - exact) < 3 * dg.uncertainty_kcal_per_mol
    assert 0.01 < dg.uncertainty_kcal_per_mol < 0.3
    assert dg.label == "dG(trans - gauche)" and not dg.states.folding
    # Convergence follows the same difference; all of production forward is the whole again.
    last = [p for p in analysis.convergence if p.direction == "forward"][-1]
    assert last.delta_g.dg_kcal_per_mol == pytest.approx(dg.dg_kcal_per_mol, abs=1e-6)
    assert last.pmf_rmsd_kcal_per_mol < 1e-9


def test_without_states_a_periodic_cv_has_no_free_energy_difference(torsion):
    pmf, samples, _ = torsion
    analysis = analyze_campaign(samples, method="histogram", n_bootstraps=0, convergence_fractions=(0.5, 1.0))
    assert analysis.delta_g is None
    assert all(p.delta_g is None for p in analysis.convergence)
    assert analysis.next_steps.lines() == []


def test_a_hole_across_the_seam_is_named_as_one_hole(torsion):
    pmf, samples, _ = torsion
    period = pmf.period
    windows = []
    for window in samples.windows:
        keep = np.abs(window.series.values) < 0.44 * period  # nothing within 6 % of a period of ±P/2
        series = replace(window.series, steps=window.series.steps[keep], values=window.series.values[keep])
        windows.append(replace(window, series=series))
    holed = replace(samples, windows=windows)
    analysis = analyze_campaign(holed, method="histogram", n_bootstraps=0, convergence_fractions=())
    holes = analysis.combined.holes()
    assert len(holes) == 1
    low, high = holes[0]
    assert low > high  # across the seam
    assert 0.40 * period < low < 0.47 * period and -0.47 * period < high < -0.40 * period
    warning = [w for w in analysis.warnings if "no samples between" in w]
    assert len(warning) == 1 and "across the seam of the period" in warning[0], analysis.warnings
    assert np.isnan(analysis.combined.pmf_kcal_per_mol[np.abs(analysis.combined.bin_centres) > 0.48 * period]).all()


# -- the geometry ------------------------------------------------------------------------------


def test_values_wrap_into_one_period_and_differences_are_minimum_images():
    axis = CVAxis(360.0)
    np.testing.assert_allclose(axis.wrap([-180.0, 179.9, 180.0, 540.0, -190.0]), [-180.0, 179.9, -180.0, -180.0, 170.0])
    np.testing.assert_allclose(axis.difference([179.0, -179.0, 10.0], [-179.0, 179.0, 350.0]), [-2.0, 2.0, 20.0])
    shifted = CVAxis(2 * math.pi, 0.0)
    assert shifted.wrap(-0.1) == pytest.approx(2 * math.pi - 0.1)
    assert (shifted.low, shifted.high) == (0.0, pytest.approx(2 * math.pi))
    np.testing.assert_allclose(shifted.grid_edges([0.1, 6.0], [1.0, 2.0], n_bins=4)[[0, -1]], [0, 2 * math.pi])


def test_windows_all_round_make_the_last_and_first_neighbours_and_a_gap_does_not():
    axis = CVAxis(360.0)
    round_ = np.arange(-180, 180, 30.0)
    assert axis.covers(round_)
    assert (len(round_) - 1, 0) in axis.neighbour_pairs(len(round_), round_)
    arc = np.arange(-60, 61, 30.0)
    assert not axis.covers(arc)
    assert (len(arc) - 1, 0) not in axis.neighbour_pairs(len(arc), arc)
    # An arc's unsampled rest is not a hole; a gap between its windows is.
    edges = np.linspace(-180, 180, 13)
    counts = np.array([0, 0, 0, 0, 5, 5, 0, 5, 5, 0, 0, 0])  # filled -60..0 and 30..90
    assert axis.empty_runs(edges, counts, arc) == [(0.0, 30.0)]


@pytest.mark.parametrize("period, cv_min, message", [
    (-360.0, None, "--period -360.0 must be a positive number"),
    (None, 0.0, "--cv-min 0.0 needs --period"),
])
def test_an_axis_the_analysis_cannot_use_is_refused(period, cv_min, message):
    with pytest.raises(AxisError, match=message):
        CVAxis(period, cv_min)


@pytest.mark.parametrize("texts, period, message", [
    (["a=0:1"], None, "needs exactly two states"),
    (["a=0:1", "b=1:2", "c=2:3"], None, "needs exactly two states"),
    (["a=0:1", "a=1:2"], None, "both --state ranges are named 'a'"),
    (["a0:1", "b=1:2"], None, "give NAME=LO:HI"),
    (["a=0-1", "b=1:2"], None, "give NAME=LO:HI"),
    (["a=x:1", "b=1:2"], None, "must be numbers"),
    (["a=1:0", "b=1:2"], None, "LO must be below HI"),
    (["a=0:1", "b=0.5:2"], None, "overlap"),
    (["a=150:-150", "b=170:-90"], 360.0, "overlap"),
    (["a=:10", "b=20:30"], 360.0, "give both ends"),
    (["a=-200:200", "b=20:30"], 360.0, "spans a whole period"),
])
def test_states_the_analysis_cannot_use_are_refused(texts, period, message):
    with pytest.raises(StateError, match=message):
        parse_states(texts, CVAxis(period))


def test_states_wrap_into_the_period_and_open_ends_reach_the_end_of_a_line():
    states = parse_states(["trans=120:240", "cis=-30:30"], CVAxis(360.0))
    assert (states.first.low, states.first.high) == (120.0, -120.0)
    inside_first, inside_second = states.masks(np.array([179.0, -179.0, 0.0, 90.0]), CVAxis(360.0))
    assert inside_first.tolist() == [True, True, False, False]
    assert inside_second.tolist() == [False, False, True, False]
    line = parse_states(["unfolded=:0.7", "folded=0.7:"])
    assert line.first.describe("Q") == "Q <= 0.7" and line.second.describe("Q") == "Q > 0.7"
    assert line.label == "dG(folded - unfolded)" and not line.folding
