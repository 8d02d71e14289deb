"""What setup and steered MD leave behind, and which of it is missing: the one test of their outputs.

:mod:`protbench_nrp.stages` judges these two stages done with these
functions, and so do their own scripts when they decide to skip work
(:meth:`protbench_nrp.systems.SetupFiles.is_complete`,
:func:`protbench_nrp.steered.steered_products_exist`). It lives below both
(it needs only the layout and a :class:`~protbench_nrp.store.ResultsStore`)
because ``stages`` reaches the scripts' modules through ``variables``.

A product counts when it is a file of at least one byte: an empty file (an
upload cut short, a full disk) is as missing as none. Each directory is
asked once, by :meth:`~protbench_nrp.store.ResultsStore.sizes`, however many
window structures it should hold.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Iterable

from .layout import Campaign
from .store import ResultsStore

__all__ = ["setup_products", "steered_products", "missing_products", "missing_setup", "missing_steered"]


def setup_products(campaign: Campaign) -> tuple[PurePosixPath, ...]:
    """The setup stage's outputs: native contacts, minimized structure, the System XML (written last)."""
    return campaign.contacts_file, campaign.minimized_pdb, campaign.system_xml


def steered_products(campaign: Campaign, replica: int, n_windows: int) -> list[PurePosixPath]:
    """A replica's steered-MD outputs the windows read: its equilibrated state and every window structure."""
    return [campaign.steered_state(replica)] + [campaign.window_pdb(replica, window) for window in range(n_windows)]


def missing_products(store: ResultsStore, directory: PurePosixPath,
                     paths: Iterable[PurePosixPath]) -> list[str]:
    """Names of ``paths`` (all directly in ``directory``) that are absent or empty, by one listing."""
    sizes = store.sizes(directory)
    return [path.name for path in paths if sizes.get(path.name, 0) <= 0]


def missing_setup(store: ResultsStore, campaign: Campaign) -> list[str]:
    """The setup outputs absent or empty in ``store``."""
    return missing_products(store, campaign.setup_dir, setup_products(campaign))


def missing_steered(store: ResultsStore, campaign: Campaign, replica: int, n_windows: int) -> list[str]:
    """Replica ``replica``'s steered-MD outputs absent or empty in ``store``."""
    return missing_products(store, campaign.replica_dir(replica), steered_products(campaign, replica, n_windows))
