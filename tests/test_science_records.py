"""Window centres, the target catalog and the JSON records windows leave behind."""

import json
import sys
import types

import pytest

from protbench_nrp import science
from protbench_nrp.records import Progress, UmbrellaParameters


def test_centres_are_evenly_spaced_with_both_ends():
    centres = [science.window_centre(w) for w in range(31)]
    assert centres[0] == pytest.approx(1.0)
    assert centres[-1] == pytest.approx(0.4)
    steps = {round(b - a, 12) for a, b in zip(centres, centres[1:])}
    assert steps == {-0.02}
    assert science.window_centre(0, 1) == 1.0


@pytest.mark.parametrize("window,n", [(31, 31), (-1, 31), (0, 0)])
def test_window_outside_the_count_is_refused(window, n):
    with pytest.raises(ValueError, match="window|number of windows"):
        science.window_centre(window, n)


def test_local_catalog_without_proteinbenchmark(monkeypatch):
    monkeypatch.setitem(sys.modules, "proteinbenchmark", None)  # import fails
    villin = science.target_conditions("villin")
    assert (villin.temperature_kelvin, villin.pressure_atm) == (300.0, 0.0)
    with pytest.raises(science.UnknownTargetError, match="'nope'.*PROTBENCH_TARGET"):
        science.target_conditions("nope")


def test_proteinbenchmark_catalog_is_preferred(monkeypatch):
    from openmm import unit

    fake = types.ModuleType("proteinbenchmark")
    fake.benchmark_targets = {
        "gb3": {"temperature": 310.0 * unit.kelvin, "pressure": 1.0 * unit.bar,
                "equil_traj_length": 2.0 * unit.nanosecond},
    }
    monkeypatch.setitem(sys.modules, "proteinbenchmark", fake)
    gb3 = science.target_conditions("gb3")
    assert gb3.source == "proteinbenchmark"
    assert gb3.temperature_kelvin == pytest.approx(310.0)
    assert gb3.pressure_atm == pytest.approx(1.0 / 1.01325)
    assert gb3.equil_length_ns == pytest.approx(2.0)
    with pytest.raises(science.UnknownTargetError, match="proteinbenchmark's catalog"):
        science.target_conditions("nope")


def _fake_catalog(monkeypatch, **extra):
    from openmm import unit

    fake = types.ModuleType("proteinbenchmark")
    fake.benchmark_targets = {
        "gb3": {"temperature": 310.0 * unit.kelvin, "pressure": 1.0 * unit.bar,
                "equil_traj_length": 2.0 * unit.nanosecond,
                "equil_frame_length": 20.0 * unit.picosecond, **extra},
    }
    monkeypatch.setitem(sys.modules, "proteinbenchmark", fake)


def test_stage_settings_take_the_catalog_unless_a_variable_is_given(monkeypatch):
    from protbench_nrp.steered import SteeredSettings
    from protbench_nrp.window import WindowSettings

    _fake_catalog(monkeypatch)
    for stage, args in ((WindowSettings, ("gb3", "ff", 1, 0)), (SteeredSettings, ("gb3", "ff", 1))):
        settings = stage.resolve(*args, platform="CPU")
        assert settings.temperature_kelvin == pytest.approx(310.0)
        assert settings.pressure_atm == pytest.approx(1.0 / 1.01325)
        assert (settings.equil_length_ns, settings.equil_frame_ps) == pytest.approx((2.0, 20.0))
        # absent from the catalog: the seed's defaults, equilibration and production apart
        assert (settings.equil_timestep_fs, settings.equil_friction_per_ps,
                settings.equil_barostat_frequency) == (1.0, 5.0, 5)
        assert (settings.friction_per_ps, settings.barostat_frequency) == (1.0, 25)
        given = stage.resolve(*args, platform="CPU", temperature_kelvin=300.0, equil_length_ns=0.5,
                              equil_frame_ps=None)
        assert given.temperature_kelvin == 300.0 and given.equil_length_ns == 0.5
        assert given.pressure_atm == pytest.approx(1.0 / 1.01325) and given.equil_frame_ps == pytest.approx(20.0)


def test_catalog_dynamics_overrides_reach_the_settings(monkeypatch):
    from openmm import unit

    from protbench_nrp.window import WindowInputError, WindowSettings

    _fake_catalog(monkeypatch, equil_timestep=2.0 * unit.femtosecond,
                  equil_langevin_friction=10.0 / unit.picosecond, equil_barostat_frequency=10,
                  langevin_friction=0.5 / unit.picosecond, barostat_frequency=50)
    settings = WindowSettings.resolve("gb3", "ff", 1, 0, platform="CPU")
    assert (settings.equil_timestep_fs, settings.equil_friction_per_ps, settings.equil_barostat_frequency,
            settings.friction_per_ps, settings.barostat_frequency) == pytest.approx((2.0, 10.0, 10, 0.5, 50))
    assert settings.parameters().friction_per_ps == pytest.approx(0.5)
    assert WindowSettings.resolve("gb3", "ff", 1, 0, platform="CPU", equil_timestep_fs=4.0).equil_timestep_fs == 4.0
    _fake_catalog(monkeypatch, langevin_friction=0.0 / unit.picosecond)
    with pytest.raises(WindowInputError, match="friction.*'gb3'.*benchmark_targets"):
        WindowSettings.resolve("gb3", "ff", 1, 0, platform="CPU")


def test_records_round_trip_and_refuse_incomplete_files(tmp_path):
    params = UmbrellaParameters("gb3", "ff", 1, 3, 31, "Q", 0.94, 5000.0, 298.0, 1.0, 4.0, 100.0, 500.0, 1.0)
    params.write(tmp_path / "p.json")
    assert UmbrellaParameters.read(tmp_path / "p.json") == params
    assert params.k_kj_per_mol == pytest.approx(20920.0)
    progress = Progress.now("production", 50, 200, 430.0)
    progress.write(tmp_path / "progress.json")
    assert Progress.read(tmp_path / "progress.json").fraction_done == 0.25
    payload = json.loads((tmp_path / "p.json").read_text())
    del payload["centre"]
    (tmp_path / "p.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="lacks centre"):
        UmbrellaParameters.read(tmp_path / "p.json")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("text, why", [
    ('{"kind": "progress", "phase": "produ', "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"kind": "progress", "phase": "production"}', "Progress record lacks"),
], ids=["truncated", "a list", "fields missing"])
def test_a_progress_record_that_does_not_read_is_refused_naming_where_it_is_and_why(tmp_path, text, why):
    where = "s3://b/results/villin-amber14/replica-1/window-00/x-progress.json"
    with pytest.raises(ValueError, match="^" + where.replace(".", r"\.") + ": ") as parsed:
        Progress.parse(text, where)
    assert why in str(parsed.value)
    path = tmp_path / "progress.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=why):  # the file reader is the same parser, naming the file
        Progress.read(path)
    with pytest.raises(ValueError, match=str(path)):
        Progress.read(path)


def test_a_progress_record_parses_to_the_record_written():
    record = Progress.now("finished", 200, 200, 430.0, timestep_fs=4.0, frame_ps=0.4, steps_after_phase=0)
    text = json.dumps({"kind": "progress", **{k: getattr(record, k) for k in record.__dataclass_fields__}})
    assert Progress.parse(text, "here") == record
