"""What a campaign is made of: its settings and the Jobs they expand to.

:class:`CampaignConfig` carries the SHOUTING_CASE constants of
``run-umbrella-windows.py``; :class:`JobSpec` is one Job of it (setup, the
steered MD of a replica, or one umbrella window) with the exact environment
every container of that Job receives. The cluster launch renders a JobSpec
into a manifest; ``--local`` runs the same script with the same environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .layout import Campaign

#: The script each stage runs, relative to the repository root.
STAGE_SCRIPTS = {
    "setup": "umbrella-scripts/setup-umbrella-system.py",
    "steered": "umbrella-scripts/run-steered-md.py",
}


@dataclass(frozen=True)
class CampaignConfig:
    """The launcher's constants, gathered so every part reads the same values."""

    initials: str
    target: str
    ff: str
    n_replicas: int
    n_windows: int
    script_path: str = "umbrella-scripts/run-umbrella-window.py"
    local_result_dir: Path = Path("results")
    stage: str = "window"
    replicas: tuple[int, ...] | None = None   # None: 1..n_replicas
    windows: tuple[int, ...] | None = None    # None: 0..n_windows-1
    bucket: str = ""
    rclone_remote: str = ""
    rclone_secret: str = ""
    openeye_secret: str = ""
    image: str = ""
    repo_url: str = ""
    proteinbenchmark_ref: str = ""
    proteinbenchmark_repo: str = ""
    cuda_version: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    #: What a launch resolved IMAGE and PROTEINBENCHMARK_REF to (pinning.PinnedSoftware);
    #: None for a dry run, --local and --status, which ask no registry.
    pinned: object = None

    @property
    def campaign(self) -> Campaign:
        return Campaign(self.target, self.ff)

    def selected_replicas(self) -> tuple[int, ...]:
        return self.replicas if self.replicas is not None else tuple(range(1, self.n_replicas + 1))

    def selected_windows(self) -> tuple[int, ...]:
        return self.windows if self.windows is not None else tuple(range(self.n_windows))


@dataclass(frozen=True)
class JobSpec:
    """One Job of a campaign.

    Attributes
    ----------
    stage : str
        ``"setup"``, ``"steered"`` or ``"window"``.
    replica, window : int or None
        Which replica/window; ``None`` where the stage has none.
    name : str
        The Kubernetes Job name (from :func:`layout.job_name`).
    script_path : str
        Script run in the container, relative to the repository root.
    env : dict
        Every ``PROTBENCH_*`` (and ``EXTRA_ENV``) variable the containers get.
    provenance_path : PurePosixPath
        Where the applied manifest is kept, relative to the results root.
    """

    stage: str
    replica: int | None
    window: int | None
    name: str
    script_path: str
    env: dict[str, str]
    provenance_path: PurePosixPath
