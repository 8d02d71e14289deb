#!/usr/bin/env python3
"""Launch a proteinbenchmark umbrella-sampling campaign on NRP Nautilus.

Edit the constants below, then run this file: one Kubernetes Job per selected
replica and window, each manifest kept under LOCAL_RESULT_DIR as provenance.
``--dry-run`` prints the Jobs instead; ``--help`` lists every option. The
command line lives in umbrella-scripts/protbench_nrp/command.py, the launch in launcher.py.
"""

# -- the campaign ------------------------------------------------------------------
INITIALS = "jm"  # yours, please: every Job carries them so people know whom to contact
TARGET = "gb3"
FF = "null-0.0.3-pair-opc3"
N_REPLICAS = 3
N_WINDOWS = 31
STAGE = "window"  # "setup" (once), "steered" (one Job per replica) or "window"
REPLICAS = None  # e.g. (2,) to (re)launch replica 2 only; None: 1..N_REPLICAS
WINDOWS = None  # e.g. (4, 17); None: 0..N_WINDOWS-1
EXTRA_ENV = {}  # more settings for the scripts, e.g. {"PROTBENCH_PRODUCTION_LENGTH": "100"} (ns)

# -- what the pods run, and where ----------------------------------------------------
SCRIPT_PATH = "umbrella-scripts/run-umbrella-window.py"  # the window script; other stages: jobs.STAGE_SCRIPTS
LOCAL_RESULT_DIR = "results"  # provenance manifests go here (relative to this file)
TEMPLATE_PATH = "k8s_template.yaml"
IMAGE = "ghcr.io/openforcefield/proteinbenchmark-nrp:latest"
CUDA_VERSION = "12.4"  # MAJOR.MINOR of the image's CUDA: must match the Dockerfile (a test checks)
REPO_URL = "https://github.com/openforcefield/proteinbenchmark-nrp.git"  # what the pods clone
PROTEINBENCHMARK_REF = "main"  # branch, tag or commit of proteinbenchmark the pods pip install
PROTEINBENCHMARK_REPO = "https://github.com/openforcefield/proteinbenchmark.git"  # where that ref is
BUCKET = "proteinbenchmark-jm-bucket"
RCLONE_REMOTE = "nrp"
RCLONE_SECRET = "jm-rclone-config"  # Kubernetes secret holding rclone.conf
OPENEYE_SECRET = "oe-license"  # Kubernetes secret holding oe_license.txt (optional in the pod)
PREFLIGHT = True  # check the bucket holds each Job's inputs before applying (--skip-preflight)

import sys  # noqa: E402  (the constants above are what people edit, so they come first)

# Before anything of umbrella-scripts is imported: a --dry-run writes no file, not even __pycache__.
sys.dont_write_bytecode = True

import os  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent


def use_project_python() -> None:
    """Re-run under the project's .venv when this Python lacks the launcher's packages."""
    missing = [name for name in ("yaml", "click", "kubernetes_validate") if _absent(name)]
    if not missing:
        return
    venv_python = HERE / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parent.parent.resolve():
        os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.exit(f"error: this Python lacks {', '.join(missing)}; run `make venv` in {HERE}, "
             f"then run this script again (it uses .venv by itself)")


def _absent(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def campaign_config():
    """The constants above, gathered into the launcher's :class:`CampaignConfig`."""
    _import_path()
    from protbench_nrp.jobs import CampaignConfig

    return CampaignConfig(
        initials=INITIALS, target=TARGET, ff=FF, n_replicas=N_REPLICAS, n_windows=N_WINDOWS,
        script_path=SCRIPT_PATH, local_result_dir=HERE / LOCAL_RESULT_DIR, stage=STAGE,
        replicas=None if REPLICAS is None else tuple(REPLICAS),
        windows=None if WINDOWS is None else tuple(WINDOWS),
        bucket=BUCKET, rclone_remote=RCLONE_REMOTE, rclone_secret=RCLONE_SECRET,
        openeye_secret=OPENEYE_SECRET, image=IMAGE, repo_url=REPO_URL,
        proteinbenchmark_ref=PROTEINBENCHMARK_REF, proteinbenchmark_repo=PROTEINBENCHMARK_REPO,
        cuda_version=CUDA_VERSION, extra_env=dict(EXTRA_ENV),
    )


def _import_path() -> None:
    scripts = str(HERE / "umbrella-scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)


def main() -> None:
    """Hand the campaign to the command line (``--help`` lists the options)."""
    use_project_python()
    _import_path()
    from protbench_nrp import command

    command.main(campaign_config(), repo_dir=HERE, template_path=HERE / TEMPLATE_PATH, preflight=PREFLIGHT)


if __name__ == "__main__":
    main()
