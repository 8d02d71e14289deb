"""Run run-umbrella-windows.py's command line on a test campaign.

Usage: ``python launch_driver.py CONFIG_JSON [launcher options...]``. The
constants come from ``run-umbrella-windows.py`` itself, overridden by the
JSON object (``local_result_dir`` and ``extra_env`` included), so a test
launches exactly what the user's script would, into a results tree of its own.
"""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "umbrella-scripts"))


def main() -> None:
    spec = importlib.util.spec_from_file_location("run_umbrella_windows", REPO_ROOT / "run-umbrella-windows.py")
    constants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(constants)
    overrides = json.loads(sys.argv[1])
    if "local_result_dir" in overrides:
        overrides["local_result_dir"] = Path(overrides["local_result_dir"])
    for selection in ("replicas", "windows"):
        if overrides.get(selection) is not None:
            overrides[selection] = tuple(overrides[selection])
    config = dataclasses.replace(constants.campaign_config(), **overrides)

    from protbench_nrp import command

    command.main(config, repo_dir=REPO_ROOT, template_path=REPO_ROOT / constants.TEMPLATE_PATH,
                 preflight=False, argv=sys.argv[2:])


if __name__ == "__main__":
    main()
