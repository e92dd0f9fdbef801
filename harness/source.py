"""The data a simulation shares out across its sites: fetching it (``--download``) and reading it.

Only the harness ever downloads: a site reads what its hospital put on disk and never fetches anything
(``site_agent.data``). The harness reads its source data the way a site reads its own, so an official
MedMNIST file has its MD5 checked unless the operator turned that off for this machine's reads
(:func:`md5_checks`; ``coordinator simulate --no-verify-md5``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from shared.datasets import IMAGE_SIZE, MEDMNIST_ROOT_ENV, dataset_info, resolve_data_root
from shared.errors import ConfigError, DataError
from site_agent.data import LocalData, read_local_data
from site_agent.medmnist_files import medmnist_class, official_file_name

log = logging.getLogger(__name__)

# Whether the harness's own reads check an official file's MD5. The operator's choice on this machine, not a
# run-config key: the run config travels to the sites, and each site decides its own checks.
_VERIFY_MD5: ContextVar[bool] = ContextVar("verify_md5", default=True)


@contextmanager
def md5_checks(enabled: bool) -> Iterator[None]:
    """Inside the block, :func:`read_source` checks (or, with ``enabled`` False, skips) an official file's MD5."""
    token = _VERIFY_MD5.set(enabled)
    try:
        yield
    finally:
        _VERIFY_MD5.reset(token)


def read_source(dataset: str, data_root: str) -> LocalData:
    """Every split of the data at ``data_root``, read as a site reads its own (``site_agent.data``).

    Raises:
        ConfigError, DataError: as :func:`site_agent.data.read_local_data`.
    """
    return read_local_data(data_root, dataset, _VERIFY_MD5.get())


def download_medmnist(dataset: str, data_root: str = "") -> Path:
    """Fetch the official 28x28 file of a MedMNIST dataset into the data root; returns where it is.

    The ``medmnist`` package's own downloader fetches it and checks its MD5 against ``medmnist.INFO``; a
    file already there with the official MD5 is kept. The data root is ``data_root``, else
    ``$MEDMNIST_ROOT``, else ``~/.medmnist`` (medmnist's default root), created when missing.

    Raises:
        ConfigError: an unknown dataset, or a data root that is a file (an export is not downloaded into).
        DataError: the download failed or what arrived does not have the official MD5.
    """
    info = dataset_info(dataset)
    root = resolve_data_root(data_root)
    if root.is_file():
        raise ConfigError(f"--download fetches {official_file_name(info)!r} into a folder, but the data root is a file",
                          hint=f"give --data-root a folder, or leave it out for ${MEDMNIST_ROOT_ENV} or ~/.medmnist")
    root.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s into %s (medmnist's downloader, MD5 checked)", official_file_name(info), root)
    try:
        medmnist_class(info)(split="test", root=str(root), download=True, size=IMAGE_SIZE)
    except RuntimeError as exc:  # medmnist turns every download failure, a wrong MD5 included, into this
        from medmnist import INFO

        raise DataError(
            f"{official_file_name(info)!r} could not be downloaded, or what arrived does not have the official MD5",
            local_detail=f"into: {root}",
            hint=f"check the connection, or fetch {INFO[info.name]['url']} by hand (MD5 {info.md5[IMAGE_SIZE]}) "
            f"into {root}",
        ) from exc
    return root / official_file_name(info)
