"""What setup and steered MD leave behind, and which of it is missing: the one test of their outputs.

:mod:`protbench_nrp.stages` judges these two stages done with these
functions, and so do their own scripts when they decide to skip work
(:meth:`protbench_nrp.systems.SetupFiles.is_complete`,
:func:`protbench_nrp.steered.steered_products_exist`). It sits with the
layout, below both: ``stages`` reaches the scripts' modules through
``variables``, and the scripts' modules may not import the results store's
layer. Its functions take anything with ``sizes(directory)`` (a
:class:`~protbench_nrp.store.ResultsStore`, or :class:`LocalSizes` for a
results root on this machine).

A product counts when it is a file of at least one byte: an empty file (an
upload cut short, a full disk) is as missing as none. Each directory is
asked once, by :meth:`~protbench_nrp.store.ResultsStore.sizes`, however many
window structures it should hold.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Iterable, Protocol

from .layout import Campaign

__all__ = ["setup_products", "steered_products", "missing_products", "missing_setup", "missing_steered",
           "file_sizes", "LocalSizes"]


class Sizes(Protocol):
    """What the checks need of a results tree: the sizes of the files directly in a directory."""

    def sizes(self, directory: PurePosixPath | str) -> dict[str, int]:
        """Bytes of each file directly in ``directory`` by name; ``{}`` when absent."""


def file_sizes(directory: Path) -> dict[str, int]:
    """Bytes of each file directly in ``directory`` on this machine; ``{}`` when there is no such directory.

    Raises
    ------
    OSError
        When it exists but cannot be listed.
    """
    try:
        return {entry.name: entry.stat().st_size for entry in directory.iterdir() if entry.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return {}


class LocalSizes:
    """:class:`Sizes` of a results root on this machine (for the scripts, which read no store)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def sizes(self, directory: PurePosixPath | str) -> dict[str, int]:
        return file_sizes(self.root / directory)


def setup_products(campaign: Campaign) -> tuple[PurePosixPath, ...]:
    """The setup stage's outputs: native contacts, minimized structure, the System XML (written last)."""
    return campaign.contacts_file, campaign.minimized_pdb, campaign.system_xml


def steered_products(campaign: Campaign, replica: int, n_windows: int) -> list[PurePosixPath]:
    """A replica's steered-MD outputs the windows read: its equilibrated state and every window structure."""
    return [campaign.steered_state(replica)] + [campaign.window_pdb(replica, window) for window in range(n_windows)]


def missing_products(store: Sizes, directory: PurePosixPath,
                     paths: Iterable[PurePosixPath]) -> list[str]:
    """Names of ``paths`` (all directly in ``directory``) that are absent or empty, by one listing."""
    sizes = store.sizes(directory)
    return [path.name for path in paths if sizes.get(path.name, 0) <= 0]


def missing_setup(store: Sizes, campaign: Campaign) -> list[str]:
    """The setup outputs absent or empty in ``store``."""
    return missing_products(store, campaign.setup_dir, setup_products(campaign))


def missing_steered(store: Sizes, campaign: Campaign, replica: int, n_windows: int) -> list[str]:
    """Replica ``replica``'s steered-MD outputs absent or empty in ``store``."""
    return missing_products(store, campaign.replica_dir(replica), steered_products(campaign, replica, n_windows))
