"""The villin demo's dynamics: hydrogen masses of 3 amu carry a 4 fs production."""

from __future__ import annotations

import numpy as np
import pytest

from protbench_nrp.local import DEMO_ENV
from protbench_nrp.science import TIMESTEP_FS

from .conftest import run_window

pytestmark = pytest.mark.slow

#: Every production frame's temperature lies within 20 % of the target (300 K): about five
#: standard deviations of the instantaneous temperature of villin's ~1,450 degrees of freedom.
TEMPERATURE_BAND_KELVIN = (240.0, 360.0)
#: ... and the mean of the frames within 5 %.
MEAN_BAND_KELVIN = (285.0, 315.0)


def _state_data(path):
    rows = [line.split(",") for line in path.read_text().splitlines() if not line.startswith("#")]
    return np.array([[float(v) for v in row] for row in rows])


def test_the_demos_production_at_4_fs_stays_finite_at_its_temperature(villin_results, window_files):
    root, files = villin_results.root, window_files
    demo = {key: value for key, value in DEMO_ENV.items()}  # the demo's own lengths and k
    demo["PROTBENCH_CHECKPOINT"] = "30"  # one segment: nothing here is about segments
    demo["PROTBENCH_SAVE_STATE"] = "30"
    assert TIMESTEP_FS == 4.0 and "PROTBENCH_TIMESTEP" not in demo  # the production step is 4 fs
    done = run_window(root, **demo)
    assert done.returncode == 0, done.stderr + done.stdout
    data = _state_data(root / files.production("out"))
    assert len(data) == 150  # 30 ps, a frame every 0.2 ps
    assert np.all(np.isfinite(data[:, :7]))
    temperature = data[:, 5]
    low, high = TEMPERATURE_BAND_KELVIN
    assert low <= temperature.min() and temperature.max() <= high, (temperature.min(), temperature.max())
    assert MEAN_BAND_KELVIN[0] <= temperature.mean() <= MEAN_BAND_KELVIN[1], temperature.mean()
