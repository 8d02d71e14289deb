"""Damaged, partial and inconsistent campaigns: each gets a message naming the culprit and the fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from protbench_nrp.analysis import AnalysisError, analyze_campaign, load_campaign, parse_cv_timeseries
from protbench_nrp.analysis_cli import build_command
from protbench_nrp.layout import Campaign
from protbench_nrp.store import LocalStore

from .conftest import CHEAP
from .synthetic import CV_HEADER, DoubleWell, sample_window, write_cv_file, write_parameters

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "umbrella-scripts" / "analyze-umbrella-windows.py"


def run_cli(root, campaign, *extra):
    return CliRunner().invoke(build_command(), ["-o", str(root), "--target", campaign.target,
                                                "--ff", campaign.ff, *extra])


# -- one CV file -----------------------------------------------------------------------------


def test_a_cv_file_is_read_as_steps_and_values():
    series = parse_cv_timeseries(CV_HEADER + "250 0.91\n500 0.905\n750 0.9\n", "w.dat")
    assert series.steps.tolist() == [250, 500, 750]
    assert series.values.tolist() == [0.91, 0.905, 0.9]
    assert series.notes == ()


def test_a_torn_last_line_is_dropped_with_a_warning():
    # "0.9" could be a truncated "0.9012": without its newline it is never trusted.
    series = parse_cv_timeseries(CV_HEADER + "250 0.91\n500 0.905\n750 0.9", "w.dat")
    assert series.steps.tolist() == [250, 500]
    assert len(series.notes) == 1
    assert "w.dat" in series.notes[0] and "torn last line '750 0.9'" in series.notes[0]


def test_frames_written_again_after_a_restart_keep_the_later_copy():
    text = CV_HEADER + "250 0.91\n500 0.905\n750 0.90\n500 0.80\n750 0.81\n1000 0.82\n"
    series = parse_cv_timeseries(text, "w.dat")
    assert series.steps.tolist() == [250, 500, 750, 1000]
    assert series.values.tolist() == [0.91, 0.80, 0.81, 0.82]
    assert "2 frames were written again after a restart" in series.notes[0]


@pytest.mark.parametrize("line,expected", [
    ("500 0.9 7", "line 3: expected 'step value', found '500 0.9 7'"),
    ("five 0.9", "line 3: expected 'step value', found 'five 0.9'"),
    ("500 nan", "line 3: the collective variable is nan"),
])
def test_a_damaged_line_inside_the_file_is_an_error_naming_file_and_line(line, expected):
    with pytest.raises(AnalysisError, match="w.dat") as caught:
        parse_cv_timeseries(CV_HEADER + f"250 0.91\n{line}\n750 0.9\n", "w.dat")
    assert expected in str(caught.value)


# -- a campaign -------------------------------------------------------------------------------


def test_nothing_to_analyse_is_an_error_naming_where_it_looked(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "-o", str(tmp_path), "--target", "gb3",
                             "--ff", "null-0.0.3-pair-opc3"], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"no replica directories under {tmp_path / 'gb3-null-0.0.3-pair-opc3'}" in result.stderr
    assert "--target/--ff" in result.stderr


def test_windows_without_cv_files_are_an_error_saying_none_has_produced(tmp_path):
    campaign = Campaign("toy", "ff")
    for window in range(3):
        write_parameters(tmp_path, campaign, 1, window, 1.0 - 0.1 * window, 100.0, 300.0, 3, 100)
    result = run_cli(tmp_path, campaign)
    assert result.exit_code == 1
    assert "no CV files (toy-ff-production-fraction-native-contacts.dat)" in result.stderr
    assert "not produced any yet" in result.stderr


def test_a_missing_option_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(build_command(), ["-o", str(tmp_path), "--ff", "x"], env={})
    assert result.exit_code == 2
    assert "--target" in result.stderr


def test_missing_windows_are_named_and_the_rest_analysed(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    shutil.rmtree(root / campaign.window_dir(2, 7))
    (root / campaign.window_files(3, 4).cv_timeseries).unlink()  # equilibrating: parameters only
    result = run_cli(root, campaign)
    assert result.exit_code == 0, result.output
    assert ("replica 2: 1 of 16 windows missing, analysed without them: 07 (no window directory)"
            in result.stderr)
    assert ("replica 3: 1 of 16 windows missing, analysed without them: 04 (no production "
            "frames yet)" in result.stderr)
    assert "46 windows from replicas 1, 2, 3" in result.stdout
    assert (root / campaign.pmf_csv).is_file()


def test_a_gap_in_the_windows_is_reported_as_poor_overlap(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    for replica in synthetic_results.replicas:
        for window in (7, 8):
            shutil.rmtree(root / campaign.window_dir(replica, window))
    samples = load_campaign(LocalStore(root), campaign)
    analysis = analyze_campaign(samples, **CHEAP)
    poor = [w for w in analysis.warnings if "overlap less than 0.03" in w]
    # All replicas together, and each replica alone.
    assert [w.split(":")[0] for w in poor] == ["all replicas", "replica 1", "replica 2", "replica 3"]
    for warning in poor:
        assert "poorly determined: 06-09 (0.0" in warning
        assert "Add windows between them" in warning


def test_short_windows_are_named_with_their_frame_counts(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    path = root / campaign.window_files(1, 3).cv_timeseries
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:601]))  # header + 600 frames
    result = run_cli(root, campaign)
    assert result.exit_code == 0, result.output
    assert "1 windows have fewer production frames than their production length" in result.stderr
    assert "replica 1 window 03 (600/2000)" in result.stderr


def test_a_torn_cv_file_is_used_without_its_last_line(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    path = root / campaign.window_files(2, 5).cv_timeseries
    with open(path, "a") as handle:
        handle.write("50025 0.7")
    result = run_cli(root, campaign)
    assert result.exit_code == 0, result.output
    assert f"warning: {path}: dropped the torn last line '50025 0.7' (a partial write)" in result.stderr
    assert "fewer production frames" not in result.stderr


def test_replicas_that_ran_different_windows_are_refused(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    write_parameters(root, campaign, 2, 3, 0.123, synthetic_results.k_kcal_per_mol,
                     synthetic_results.temperature_kelvin, 16, synthetic_results.n_frames)
    result = run_cli(root, campaign)
    assert result.exit_code == 1
    assert "replicas disagree on the umbrella windows they ran" in result.stderr
    assert "window 03 centre: 0.88 in replica 1 but 0.123 in replica 2" in result.stderr
    assert "--replica" in result.stderr
    # Each replica alone is still fine.
    assert run_cli(root, campaign, "-r", "2").exit_code == 0


def test_windows_at_different_temperatures_are_refused(tmp_path):
    campaign = Campaign("toy", "ff")
    rng = np.random.default_rng(3)
    for window, temperature in enumerate((300.0, 300.0, 310.0)):
        centre = 0.9 - 0.1 * window
        write_cv_file(tmp_path / campaign.window_files(1, window).cv_timeseries,
                      sample_window(DoubleWell(), centre, 100.0, temperature, 200, rng))
        write_parameters(tmp_path, campaign, 1, window, centre, 100.0, temperature, 3, 200)
    result = run_cli(tmp_path, campaign)
    assert result.exit_code == 1
    assert "windows ran at different temperatures (300.0 K and replica 1 window 02: 310.0 K)" in result.stderr


def test_a_cv_file_without_parameters_is_refused(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    files = campaign.window_files(1, 2)
    (root / files.parameters).unlink()
    result = run_cli(root, campaign)
    assert result.exit_code == 1
    assert f"{root / files.cv_timeseries} has no umbrella parameters beside it" in result.stderr
    assert files.parameters.name in result.stderr


@pytest.mark.parametrize("content,reason", [
    ("{not json", "Expecting property name"),
    (json.dumps({"kind": "umbrella-parameters", "centre": 0.5}), "lacks"),
    (json.dumps([1, 2]), "not a JSON object"),
])
def test_an_unreadable_parameters_file_is_refused(synthetic_results, content, reason):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    path = root / campaign.window_files(3, 9).parameters
    path.write_text(content)
    result = run_cli(root, campaign)
    assert result.exit_code == 1
    assert f"{path} is not a valid umbrella-parameters record" in result.stderr
    assert reason in result.stderr
    assert "rerun the window" in result.stderr


def test_parameters_of_another_window_are_refused(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    shutil.copy(root / campaign.window_files(1, 4).parameters, root / campaign.window_files(1, 5).parameters)
    result = run_cli(root, campaign)
    assert result.exit_code == 1
    assert "records target 'synthetic', ff 'double-well', replica 1, window 4" in result.stderr
    assert "replica 1 window 5: it was copied to the wrong directory" in result.stderr


def test_an_unknown_replica_is_refused_naming_those_found(synthetic_results):
    result = run_cli(synthetic_results.root, synthetic_results.campaign, "-r", "4")
    assert result.exit_code == 1
    assert "replica 4 not found under" in result.stderr and "(found: 1, 2, 3)" in result.stderr


def test_a_window_too_short_to_use_is_left_out_by_name(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    path = root / campaign.window_files(3, 12).cv_timeseries
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:6]))  # 5 frames
    result = run_cli(root, campaign)
    assert result.exit_code == 0, result.output
    assert ("warning: left out: replica 3 window 12 has 5 production frames, 5 after discarding "
            "0 as equilibration; at least 10 are needed") in result.stderr
    assert "47 windows from replicas 1, 2, 3" in result.stdout


def test_discarding_every_frame_is_an_error_naming_the_windows(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    result = run_cli(root, campaign, "--discard-frames", "1995")
    assert result.exit_code == 1
    assert ("no window has enough production frames to analyse: replica 1 window 00 has 2000 "
            "production frames, 5 after discarding 1995 as equilibration; at least 10 are "
            "needed") in result.stderr
    assert "(and 47 more windows alike)" in result.stderr
    assert "lower --discard-frames" in result.stderr
