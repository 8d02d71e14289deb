"""The PMF of windows sampled exactly from a known double well comes back, with honest errors."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from click.testing import CliRunner

from protbench_nrp.analysis import PMF, PMFEstimator, analyze_campaign, load_campaign
from protbench_nrp.analysis_cli import build_command
from protbench_nrp.store import LocalStore

from .conftest import CHEAP
from .synthetic import DoubleWell, bin_averaged_pmf, write_synthetic_campaign

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def deviations(pmf, synthetic, min_samples=30):
    """Estimate minus truth (both zero at the estimate's reference bin) and its z-scores."""
    truth = bin_averaged_pmf(synthetic.pmf, pmf.bin_edges, synthetic.temperature_kelvin)
    reference = int(np.nanargmin(pmf.pmf_kcal_per_mol))
    error = pmf.pmf_kcal_per_mol - (truth - truth[reference])
    used = pmf.samples_per_bin >= min_samples
    used[reference] = False  # zero by construction, with zero uncertainty
    return error[used], error[used] / pmf.uncertainty_kcal_per_mol[used], \
        pmf.uncertainty_kcal_per_mol[used]


@pytest.fixture(scope="module")
def analysis(synthetic):
    return analyze_campaign(load_campaign(LocalStore(synthetic.root), synthetic.campaign), **CHEAP)


def test_every_window_is_read_with_its_recorded_parameters(synthetic, analysis):
    assert analysis.warnings == []
    assert analysis.missing == {}
    assert len(analysis.windows) == len(synthetic.replicas) * len(synthetic.centres)
    assert analysis.temperature_kelvin == synthetic.temperature_kelvin
    for window in analysis.windows:
        assert window.centre == pytest.approx(synthetic.centres[window.window])
        assert window.k_kcal_per_mol == synthetic.k_kcal_per_mol
    # Replicas of a window share one MBAR state; states run along the CV.
    assert analysis.combined.overlap.shape == (len(synthetic.centres),) * 2
    assert list(analysis.combined.state_centres) == sorted(synthetic.centres)


def test_subsampling_follows_the_correlation_of_the_series(synthetic, analysis):
    # The series are an AR(1) Gaussian copula with coefficient 0.8: g = 1.8/0.2 = 9
    # for the Gaussian, somewhat less after the monotone map to the CV.
    g = np.median([w.statistical_inefficiency for w in analysis.windows])
    assert 5.0 < g < 11.0
    for w in analysis.windows:
        kept = synthetic.n_frames - w.n_discarded
        assert len(w.samples) == pytest.approx(kept / w.statistical_inefficiency, rel=0.1, abs=2)


@pytest.mark.parametrize("scope", ["all", 1, 2, 3])
def test_recovered_pmf_matches_the_double_well_within_its_error_bars(synthetic, analysis, scope):
    pmf = analysis.combined if scope == "all" else analysis.per_replica[scope]
    error, z, sigma = deviations(pmf, synthetic)
    assert len(error) >= 15  # the profile covers the CV range the windows sampled
    assert np.mean(np.abs(z) < 3) >= 0.9
    assert np.max(np.abs(error)) < 0.5
    # Honest error bars: neither absurdly large nor vanishing, and about as
    # large as the scatter they describe.
    assert 0.01 < np.median(sigma) < 0.3
    assert 0.3 < np.sqrt(np.mean(z ** 2)) < 2.0


def test_all_replicas_together_are_more_precise_than_one(analysis):
    combined = np.nanmedian(analysis.combined.uncertainty_kcal_per_mol)
    for pmf in analysis.per_replica.values():
        assert combined < 0.8 * np.nanmedian(pmf.uncertainty_kcal_per_mol)


def test_well_spaced_windows_raise_no_overlap_warning(analysis):
    assert analysis.combined.poor_overlaps(0.03) == []
    neighbours = np.diag(analysis.combined.overlap, 1)
    assert neighbours.min() > 0.03


def test_bootstrap_errors_agree_with_analytical_ones(synthetic):
    samples = load_campaign(LocalStore(synthetic.root), synthetic.campaign, replicas=(1,))
    analytical = analyze_campaign(samples, **CHEAP).combined
    bootstrap = analyze_campaign(samples, method="histogram", n_bootstraps=40).combined
    np.testing.assert_allclose(bootstrap.pmf_kcal_per_mol, analytical.pmf_kcal_per_mol)
    well_sampled = (analytical.samples_per_bin >= 30) & (analytical.uncertainty_kcal_per_mol > 0)
    ratio = bootstrap.uncertainty_kcal_per_mol[well_sampled] / analytical.uncertainty_kcal_per_mol[well_sampled]
    assert 0.6 < np.nanmedian(ratio) < 1.6


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_command_writes_the_profile_table_and_plots(synthetic_results, analysis):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    result = CliRunner().invoke(build_command(), ["-o", str(root)],
                                env={"PROTBENCH_TARGET": campaign.target, "PROTBENCH_FF": campaign.ff})
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert f"{campaign.name}: 48 windows from replicas 1, 2, 3" in result.stdout

    rows = read_csv(root / campaign.pmf_csv)
    assert list(rows[0]) == [
        "cv", "pmf_kcal_per_mol", "uncertainty_kcal_per_mol", "samples",
        "replica_1_pmf_kcal_per_mol", "replica_1_uncertainty_kcal_per_mol",
        "replica_2_pmf_kcal_per_mol", "replica_2_uncertainty_kcal_per_mol",
        "replica_3_pmf_kcal_per_mol", "replica_3_uncertainty_kcal_per_mol"]
    pmf = analysis.combined
    assert len(rows) == len(pmf.bin_centres)
    as_float = lambda text: float(text) if text else np.nan  # noqa: E731
    np.testing.assert_allclose([float(r["cv"]) for r in rows], pmf.bin_centres, rtol=1e-5)
    np.testing.assert_allclose([as_float(r["pmf_kcal_per_mol"]) for r in rows],
                               pmf.pmf_kcal_per_mol, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([as_float(r["replica_2_uncertainty_kcal_per_mol"]) for r in rows],
                               analysis.per_replica[2].uncertainty_kcal_per_mol, rtol=1e-5, atol=1e-6)
    assert sum(int(r["samples"]) for r in rows) == sum(len(w.samples) for w in analysis.windows)

    windows = read_csv(root / campaign.analysis_file("windows.csv"))
    assert len(windows) == 48
    assert {(int(w["replica"]), int(w["window"])) for w in windows} == {
        (r, w) for r in (1, 2, 3) for w in range(16)}
    for name in ("pmf.png", "cv-histograms.png", "overlap.png"):
        path = root / campaign.analysis_file(name)
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert path.stat().st_size > 10_000
        assert f"wrote {path}" in result.stdout


def test_chosen_replicas_and_discarded_frames_are_honoured(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    result = CliRunner().invoke(build_command(), [
        "-o", str(root), "--target", campaign.target, "--ff", campaign.ff, "-r", "2",
        "--discard-frames", "500", "--bins", "40"])
    assert result.exit_code == 0, result.output
    rows = read_csv(root / campaign.pmf_csv)
    assert len(rows) == 40
    assert [c for c in rows[0] if c.startswith("replica_")] == [
        "replica_2_pmf_kcal_per_mol", "replica_2_uncertainty_kcal_per_mol"]
    windows = read_csv(root / campaign.analysis_file("windows.csv"))
    assert {w["replica"] for w in windows} == {"2"}
    assert {w["discarded_frames"] for w in windows} == {"500"}
    # With one replica, "all replicas" is that replica.
    assert [r["pmf_kcal_per_mol"] for r in rows] == [r["replica_2_pmf_kcal_per_mol"] for r in rows]


def test_low_overlap_threshold_names_every_neighbour_pair(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    result = CliRunner().invoke(build_command(), [
        "-o", str(root), "--target", campaign.target, "--ff", campaign.ff, "-r", "1",
        "--overlap-threshold", "0.9"])
    assert result.exit_code == 0, result.output
    assert "neighbouring windows overlap less than 0.9" in result.stderr
    for window in range(15):
        assert f"{window:02d}-{window + 1:02d} (" in result.stderr


# -- the temperature the windows recorded ---------------------------------------------------


def test_pmf_is_computed_at_the_temperature_the_windows_recorded(tmp_path):
    # Soft windows (k = 10 kcal/mol) at 350 K: each samples a wide stretch of the double well,
    # whose shape only beta = 1/(R * 350 K) turns back into the PMF. (Stiff windows would not
    # do: their mean forces hardly depend on the temperature.)
    hot = write_synthetic_campaign(tmp_path / "results", replicas=(1,), n_windows=8,
                                   k_kcal_per_mol=10.0, temperature_kelvin=350.0, n_frames=8000,
                                   correlation=0.3, pmf=DoubleWell(4.0), seed=7)
    samples = load_campaign(LocalStore(hot.root), hot.campaign)
    assert samples.temperature_kelvin == 350.0
    result = analyze_campaign(samples, n_bins=30, **CHEAP)
    assert result.warnings == []
    assert result.temperature_kelvin == 350.0
    error, z, _ = deviations(result.combined, hot)
    assert len(error) >= 15
    assert np.mean(np.abs(z) < 3) >= 0.9, f"PMF off the 350 K double well by {error}"
    assert np.sqrt(np.mean(z ** 2)) < 2.0, f"PMF off the 350 K double well: z-scores {z}"
    # The check has teeth: the same samples read at 300 K miss the truth far beyond their errors.
    wrong = PMFEstimator(300.0, result.combined.bin_edges, **CHEAP).estimate(result.windows)
    _, z, _ = deviations(wrong, hot)
    assert np.sqrt(np.mean(z ** 2)) > 3.0


# -- holes in the sampled range -------------------------------------------------------------


def test_empty_bins_between_filled_ones_are_holes_and_the_ends_are_not():
    edges = np.linspace(0.0, 1.0, 11)
    counts = np.array([0, 5, 0, 0, 7, 3, 0, 4, 0, 0])
    pmf = PMF(edges, np.zeros(10), np.zeros(10), counts, (0.15, 0.45, 0.75), (2, 1, 0), np.eye(3))
    assert pmf.holes() == [(pytest.approx(0.2), pytest.approx(0.4)),
                           (pytest.approx(0.6), pytest.approx(0.7))]
    assert pmf.windows_around(0.2, 0.4) == [(2, 0.15), (1, 0.45)]
    assert pmf.windows_around(0.4, 0.5) == [(2, 0.15), (1, 0.45), (0, 0.75)]


def test_a_hole_in_the_sampled_range_is_named_with_the_windows_around_it(tmp_path):
    # Windows 06, 07, 08 are centred at Q = 0.76, 0.72, 0.68; no sample is kept in
    # 0.69-0.75, so the hole covers window 07's centre and lies between 06 and 08.
    holed = write_synthetic_campaign(tmp_path / "results", replicas=(1, 2), n_frames=600,
                                     correlation=0.3)
    for replica in holed.replicas:
        for window in range(len(holed.centres)):
            path = holed.root / holed.campaign.window_files(replica, window).cv_timeseries
            lines = path.read_text().splitlines(keepends=True)
            path.write_text("".join(line for line in lines if line.startswith("#")
                                    or not 0.69 <= float(line.split()[1]) <= 0.75))
    result = analyze_campaign(load_campaign(LocalStore(holed.root), holed.campaign), **CHEAP)
    holes = [w for w in result.warnings if "no samples between" in w]
    assert [w.split(":")[0] for w in holes] == ["all replicas", "replica 1", "replica 2"], holes
    for warning in holes:
        low, high = (float(v) for v in re.search(r"between Q ([\d.]+) and ([\d.]+)", warning).groups())
        assert 0.69 <= low < 0.71 and 0.73 < high <= 0.75, warning
        assert "windows 06 (Q0 0.76), 07 (Q0 0.72) and 08 (Q0 0.68) should overlap" in warning
        assert warning.endswith("Add windows there or run longer")
    bins = result.combined.bin_centres
    blank = np.isnan(result.combined.pmf_kcal_per_mol)
    assert blank[(bins > 0.71) & (bins < 0.73)].all()

    # The command prints it, and the well-sampled fixture campaign has none (see above).
    out = CliRunner().invoke(build_command(), ["-o", str(holed.root), "--target", holed.campaign.target,
                                               "--ff", holed.campaign.ff])
    assert out.exit_code == 0, out.output
    assert "warning: all replicas: no samples between Q 0.7" in out.stderr
