"""`site-agent check` and the three data formats: each is accepted, and each kind of bad data is refused by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from shared.errors import ConfigError, DataError, LocalDataError
from site_agent.check import check_data
from site_agent.cli import app
from site_agent.data import DataFormat, load_site_images, read_local_data
from site_agent.policy import SitePolicy

POLICY = SitePolicy(min_real_per_class=5)
runner = CliRunner()


def pixels(n: int, size: int = 28, channels: int = 1, seed: int = 0) -> np.ndarray:
    """n random uint8 images (n, size, size) or (n, size, size, channels)."""
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_export(path: Path, per_class: tuple[int, ...] = (6, 8), **override: np.ndarray) -> Path:
    """A .npz export with MedMNIST's keys: train and test splits of per_class images per class."""
    labels = np.repeat(np.arange(len(per_class)), per_class)[:, None]  # (N, 1), as MedMNIST stores them
    arrays = {"train_images": pixels(len(labels)), "train_labels": labels,
              "test_images": pixels(4, seed=1), "test_labels": np.array([0, 1, 0, 1])}
    np.savez(path, **{**arrays, **override})
    return path


def write_folder(root: Path, layout: dict[str, dict[str, int]], size: int = 28, mode: str = "L") -> Path:
    """Image files per class: layout maps '<split>/<class>' or '<class>' folders to a number of PNGs."""
    for split, classes in layout.items():
        for folder, count in classes.items():
            target = root / split / folder
            target.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(pixels(count, size, 1 if mode == "L" else len(mode), seed=count)):
                Image.fromarray(image).convert(mode).save(target / f"img{i:03d}.png")
    return root


SPLIT_LAYOUT = {"train": {"0_malignant": 6, "1_benign": 7}, "test": {"0_malignant": 2, "1_benign": 2}}


def test_npz_export_is_read_with_counts_per_split(tmp_path: Path) -> None:
    """An export with MedMNIST's keys is read; the report counts images per class and split."""
    report = check_data(write_export(tmp_path / "site.npz"), "breastmnist", POLICY)
    assert report.ok and report.format == DataFormat.NPZ and report.image_shape == (1, 28, 28)
    assert [(s.split, s.per_class) for s in report.splits] == [("train", {0: 6, 1: 8}), ("test", {0: 2, 1: 2})]


def test_image_folder_with_splits_is_read(tmp_path: Path) -> None:
    """<root>/<split>/<class>/*.png: class folders are named by index, optionally with a name."""
    report = check_data(write_folder(tmp_path / "images", SPLIT_LAYOUT), "breastmnist", POLICY)
    assert report.ok and report.format == DataFormat.FOLDER
    assert {s.split: s.per_class for s in report.splits} == {"train": {0: 6, 1: 7}, "test": {0: 2, 1: 2}}


def test_flat_image_folder_is_all_training_data_and_rgb_works(tmp_path: Path) -> None:
    """<root>/<class>/*: every image is a training image; RGB images fit a 3-channel dataset."""
    root = write_folder(tmp_path / "rgb", {".": {str(c): 5 for c in range(5)}}, mode="RGB")
    report = check_data(root, "retinamnist", POLICY)
    assert report.ok and report.image_shape == (3, 28, 28) and [s.split for s in report.splits] == ["train"]
    assert any("no test split" in note for note in report.notes)


def test_client_app_loads_a_folder_with_an_empty_test_part(tmp_path: Path) -> None:
    """The ClientApp's loader takes the same folder: normalised (N, C, H, W) images, no test part."""
    root = write_folder(tmp_path / "flat", {".": {"0": 6, "1": 6}})
    site = load_site_images("breastmnist", str(root))
    assert site.train.images.shape == (12, 1, 28, 28) and len(site.test) == 0
    assert -1.0 <= site.train.images.min() and site.train.images.max() <= 1.0


def _corrupt_png(root: Path) -> None:
    (root / "train" / "1_benign" / "img000.png").write_bytes(b"not a png at all")


def _stray_file(root: Path) -> None:
    (root / "train" / "0_malignant" / "notes.txt").write_text("ward 7")


def _rgb_among_gray(root: Path) -> None:
    Image.fromarray(pixels(1, channels=3)[0]).save(root / "train" / "1_benign" / "img003.png")


def _rgba(root: Path) -> None:
    Image.fromarray(pixels(1)[0]).convert("RGBA").save(root / "train" / "1_benign" / "img003.png")


@pytest.mark.parametrize(
    ("damage", "match", "named_file"),
    [
        (_corrupt_png, "cannot be read", "img000.png"),
        (_stray_file, "not a .png/.jpg image", "notes.txt"),
        (_rgb_among_gray, r"differ in channels: grayscale \(16 images\), RGB \(1 images\)", "img003.png"),
        (_rgba, "mode 'RGBA'", "img003.png"),
    ],
)
def test_bad_files_are_refused_and_named_only_locally(tmp_path: Path, damage: Callable, match: str, named_file: str) -> None:
    """A bad file is named in the local detail for the operator, never in the message that could be sent."""
    root = write_folder(tmp_path / "images", SPLIT_LAYOUT)
    damage(root)
    with pytest.raises(LocalDataError, match=match) as info:
        read_local_data(root, "breastmnist")
    assert named_file in info.value.local_detail and named_file not in str(info.value)


@pytest.mark.parametrize("layout", [
    {"train": {"0": 6, "Doe_Jane_MRN4711": 6}},  # a class folder named after a patient
    {"train": {"0": 6}, "Doe_Jane_MRN4711": {"0": 6}},  # a patient's folder beside the split folders
], ids=["class-folder", "beside-splits"])
def test_folder_names_stay_in_the_local_detail(tmp_path: Path, layout: dict[str, dict[str, int]]) -> None:
    """A folder name may be a patient's name or record number: only the site's operator sees it."""
    root = write_folder(tmp_path / "images", layout)
    with pytest.raises(LocalDataError) as info:
        read_local_data(root, "breastmnist")
    assert "Doe_Jane_MRN4711" in info.value.local_detail
    assert "Doe_Jane_MRN4711" not in str(info.value) + (info.value.hint or "")


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda p: write_folder(p, SPLIT_LAYOUT, mode="RGB"), r"3 channel\(s\); breastmnist has 1"),
        (lambda p: write_folder(p, {"train": {"0": 6, "7": 6}}), r"labels outside 0\.\.1"),
        (lambda p: write_folder(p, {"train": {"0": 6}, "test": {"0": 0}}), "split 'test' holds no images"),
        (lambda p: write_folder(p, {"train": {"zero": 6}}), "not a class folder named by its index"),
        (lambda p: write_folder(p, {"test": {"0": 6}}), "no 'train' folder"),
        (lambda p: write_export(p.with_suffix(".npz"), train_labels=np.array([0] * 6 + [2] * 8)), r"outside 0\.\.1"),
        (lambda p: write_export(p.with_suffix(".npz"), test_images=pixels(0), test_labels=np.zeros(0, int)),
         "split 'test' holds no images"),
        (lambda p: write_export(p.with_suffix(".npz"), train_images=pixels(14).astype(np.float32)), "expected uint8"),
        (lambda p: write_export(p.with_suffix(".npz"), train_images=pixels(14, channels=3)), r"3 channel\(s\)"),
        (lambda p: write_export(p.with_suffix(".npz"), train_labels=np.zeros(3, int)), "14 images but labels"),
        (lambda p: write_export(p.with_suffix(".npz"), val_images=pixels(3)), "without its partner"),
    ],
    ids=["rgb-for-gray", "folder-label", "empty-split", "class-name", "no-train", "npz-label",
         "npz-empty-split", "npz-float", "npz-channels", "npz-label-count", "npz-partner"],
)
def test_unusable_data_is_refused_by_name(tmp_path: Path, build: Callable, match: str) -> None:
    """Each kind of unusable data is a DataError naming the split and what is wrong."""
    path = build(tmp_path / "data")
    with pytest.raises(DataError, match=match):
        read_local_data(path, "breastmnist")


def test_a_class_with_too_few_images_is_refused_by_the_policy(tmp_path: Path) -> None:
    """A class the site holds, but below min_real_per_class, makes check refuse; an absent class is a note."""
    report = check_data(write_export(tmp_path / "few.npz", per_class=(3, 8)), "breastmnist", POLICY)
    assert not report.ok and "class 0 (malignant) has 3 training images" in report.problems[0]
    report = check_data(write_export(tmp_path / "one.npz", per_class=(0, 8)), "breastmnist", POLICY)
    assert report.ok and "has no training images" in report.notes[0]


def test_a_medmnist_root_without_the_file_is_not_taken_for_an_image_folder(tmp_path: Path) -> None:
    """A folder of .npz files (and other folders) lacking the dataset's file says the file is missing."""
    write_export(tmp_path / "retinamnist.npz")
    (tmp_path / "unverified").mkdir()
    with pytest.raises(DataError, match="'pathmnist.npz' not found"):
        read_local_data(tmp_path, "pathmnist")


def test_exports_need_a_dataset_and_unreadable_npz_is_named(tmp_path: Path) -> None:
    """Without an official file name the dataset flag is required; a broken .npz is named locally."""
    with pytest.raises(ConfigError, match="needs the dataset flag"):
        read_local_data(write_export(tmp_path / "site.npz"))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(LocalDataError, match="cannot be read: it is not a complete .npz .zip. archive") as info:
        read_local_data(tmp_path / "broken.npz", "breastmnist")
    assert "broken.npz" in info.value.local_detail and "broken.npz" not in str(info.value)
    (tmp_path / "photo.npz").write_bytes(b"\xff\xd8\xff\xe0 a JPEG renamed")  # not a pickle: don't call it one
    with pytest.raises(LocalDataError, match="not an .npz .zip. archive of arrays: its first bytes are neither"):
        read_local_data(tmp_path / "photo.npz", "breastmnist")
    np.savez(tmp_path / "pickled.npz", train_images=np.array([object()], dtype=object))
    with pytest.raises(LocalDataError, match="pickled Python objects, which are refused"):
        read_local_data(tmp_path / "pickled.npz", "breastmnist")
    np.savez(tmp_path / "renamed.npz", images=pixels(4), labels=np.zeros(4, int))
    with pytest.raises(LocalDataError, match="no 'train_images'") as info:
        read_local_data(tmp_path / "renamed.npz", "breastmnist")
    assert info.value.local_detail == "arrays in the file: images, labels"


@pytest.mark.realdata
@pytest.mark.parametrize("as_folder", [False, True])
def test_official_file_is_checked_through_medmnist(data_root: Path, as_folder: bool) -> None:
    """The official file (or its folder) is read by medmnist's loader, with train, val and test."""
    path = data_root if as_folder else data_root / "breastmnist.npz"
    report = check_data(path, "breastmnist" if as_folder else None, SitePolicy())
    assert report.ok and report.format == DataFormat.MEDMNIST
    assert [(s.split, s.images) for s in report.splits] == [("train", 546), ("val", 78), ("test", 156)]


def test_cli_check_shows_the_table_and_refuses_with_exit_1(tmp_path: Path) -> None:
    """`site-agent check` prints counts per split; bad data exits 1 with the reason."""
    good = runner.invoke(app, ["check", "--data", str(write_export(tmp_path / "ok.npz", per_class=(12, 12))), "--dataset", "breastmnist"])
    assert good.exit_code == 0, good.output
    assert "malignant" in good.output and "train" in good.output and "ok: fit to distill" in good.output
    few = runner.invoke(app, ["check", "--data", str(write_export(tmp_path / "few.npz", per_class=(3, 8))),
                              "--dataset", "breastmnist", "--json"])
    assert few.exit_code == 1 and '"problems"' in few.output and "3 training images" in few.output


def test_cli_check_names_the_unreadable_file(tmp_path: Path) -> None:
    """An unreadable image is named on the operator's screen."""
    root = write_folder(tmp_path / "images", SPLIT_LAYOUT)
    _corrupt_png(root)
    result = runner.invoke(app, ["check", "--data", str(root), "--dataset", "breastmnist"])
    # run_cli prints diagnostics(): the message, then the local detail naming the file.
    assert isinstance(result.exception, LocalDataError) and "img000.png" in result.exception.diagnostics()
    assert "img000.png" not in str(result.exception)  # the part that may travel names no file


def test_a_medmnist_root_without_a_dataset_flag_lists_the_datasets_it_holds(tmp_path: Path) -> None:
    write_export(tmp_path / "retinamnist.npz")
    write_export(tmp_path / "breastmnist.npz")
    with pytest.raises(DataError, match="official files of breastmnist, retinamnist; say which one with --dataset"):
        read_local_data(tmp_path, "")
    with pytest.raises(DataError, match="'pathmnist.npz' not found .*; it holds breastmnist, retinamnist"):
        read_local_data(tmp_path, "pathmnist")


def test_class_folders_named_against_their_number_are_pointed_out(tmp_path: Path) -> None:
    """BreastMNIST's class 0 is malignant: '0_benign' is read as malignant, and check says so."""
    swapped = check_data(write_folder(tmp_path / "swapped", {"train": {"0_benign": 10, "1_malignant": 10}}),
                         "breastmnist", POLICY)
    assert swapped.ok
    assert any("read as class 0 (malignant)" in n and "'benign', which is class 1's name" in n for n in swapped.notes)
    assert any("read as class 1 (normal, benign)" in n and "class 0's name" in n for n in swapped.notes)
    named = check_data(write_folder(tmp_path / "named", {"train": {"0_Malignant": 10, "1-benign": 10, "0": 1}}),
                       "breastmnist", POLICY)
    assert not any("is read as class" in n for n in named.notes)
    custom = check_data(write_folder(tmp_path / "custom", {"train": {"0_cancer": 10, "1": 10}}), "breastmnist", POLICY)
    assert any("'cancer', which is not that class's name" in n for n in custom.notes)


def test_a_missing_data_path_says_where_it_looked_on_this_screen_only(tmp_path: Path) -> None:
    """The folder searched is local detail: shown to the operator (diagnostics), never in the message that travels."""
    from shared.errors import DataError
    from site_agent.data import read_local_data

    missing = tmp_path / "ward-7-images"
    with pytest.raises(DataError) as error:
        read_local_data(missing, "breastmnist")
    assert "ward-7" not in str(error.value) and str(missing) in error.value.diagnostics()
    assert "--data-root" in error.value.hint and "--data" in error.value.hint
