"""``site-agent check``: is the local data fit to distill? Images per class and split, and what is wrong.

Reading the data (``site_agent.data.read_local_data``) already refuses what cannot be used at all:
unreadable files, mixed or wrong channel counts, labels out of range, empty splits; images of another
size than the federation's are resized by the site, which the report notes. This module adds what the
site policy decides: a class the site holds but with fewer than ``min_real_per_class`` training images
is refused, since distilling it would come close to releasing those few patients' images.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from shared.manifest import Preprocessing
from site_agent.data import DataFormat, read_local_data
from site_agent.image_folder import class_folder_name_notes
from site_agent.labelled import SPLITS
from site_agent.policy import SitePolicy


class SplitCounts(BaseModel):
    """How many images one split holds, per class index."""

    model_config = ConfigDict(frozen=True)

    split: str
    images: int
    per_class: dict[int, int]


class CheckReport(BaseModel):
    """The outcome of checking a data path: what was found, and the problems that make it unfit."""

    model_config = ConfigDict(frozen=True)

    format: DataFormat
    dataset: str
    task: str
    class_names: dict[int, str]
    image_shape: tuple[int, int, int]  # (C, H, W), as distilled
    preprocessing: Preprocessing | None = None  # how the site resizes the images to image_shape; None: it need not
    min_real_per_class: int
    splits: list[SplitCounts]
    problems: list[str]  # any problem: the data is refused
    notes: list[str]  # worth knowing, not a reason to refuse

    @property
    def ok(self) -> bool:
        return not self.problems


def check_data(
    path: str | os.PathLike[str], dataset: str | None, policy: SitePolicy, verify_md5: bool = True
) -> CheckReport:
    """Read and check the data at ``path`` against its dataset and the site policy.

    Raises:
        ConfigError: no or an unknown dataset.
        DataError: the data cannot be read or used at all (``LocalDataError`` names the file).
    """
    local = read_local_data(path, dataset, verify_md5)
    info = local.info
    splits = [
        SplitCounts(split=name, images=len(local.splits[name]),
                    per_class=dict(enumerate(local.splits[name].class_counts(info.num_classes))))
        for name in SPLITS if name in local.splits
    ]
    train = splits[0].per_class
    minimum = policy.min_real_per_class
    problems = [
        f"class {c} ({info.label_names[c]}) has {n} training images; the site policy needs at least {minimum} "
        "(min_real_per_class)"
        for c, n in train.items() if 0 < n < minimum
    ]
    if not any(n >= minimum for n in train.values()):
        problems.append(f"no class has the {minimum} training images needed to distill it")
    notes = [f"class {c} ({info.label_names[c]}) has no training images: it will not be distilled"
             for c, n in train.items() if n == 0]
    if "test" not in local.splits:
        notes.append("no test split: this site can distill but not evaluate the global model")
    if local.preprocessing is not None:
        notes.append(resize_note(local.preprocessing))
    if local.format == DataFormat.FOLDER:
        notes += class_folder_name_notes(Path(path), info.label_names)
    return CheckReport(
        format=local.format, dataset=info.name, task=info.task, class_names=info.label_names,
        image_shape=local.image_shape, preprocessing=local.preprocessing, min_real_per_class=minimum, splits=splits,
        problems=problems, notes=notes,
    )


def resize_note(preprocessing: Preprocessing) -> str:
    """What the site does to images stored at another size, in one sentence."""
    size = preprocessing.resized_to
    how = "centre-crops them to a square and resizes them" if preprocessing.cropped else "resizes them"
    note = (f"images are {preprocessing.source_size()}: the site {how} to {size}x{size} "
            f"({preprocessing.method.value.upper()}) before distilling, and each release's manifest records it")
    if min(preprocessing.smallest_source) < size:
        note += f"; images under {size} pixels a side are enlarged, which adds no detail"
    return note
