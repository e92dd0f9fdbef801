"""A site's images at their native size: resized by the site (centre crop to a square, LANCZOS), and said so.

Exports and image folders at 64x64 or 40x32 load at 28x28 with exactly PIL's pixels; the signed manifest
of a release records what was done; ``site-agent check`` notes it; the PBC blood-cell folder (128x128
PNGs, ../shared/data/pbc-blood-cells) loads as BloodMNIST does.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from coordinator.receive import Expectation, receive_bundle
from shared.datasets import IMAGE_SIZE, denormalize, normalize
from shared.errors import DataError
from shared.manifest import Preprocessing, ResizeMethod
from shared.methods import DMConfig, NetworkSpec
from shared.schemas import DistillRequest
from site_agent.check import check_data
from site_agent.cli import app
from site_agent.data import DataFormat, read_local_data
from site_agent.handlers import prepare_release
from site_agent.images import fit_image, preprocessing_of
from site_agent.policy import PrivacyLimits, SitePolicy
from site_agent.settings import SiteSettings

POLICY = SitePolicy(min_real_per_class=5)
PBC = Path(__file__).resolve().parents[3] / "shared" / "data" / "pbc-blood-cells"
runner = CliRunner()


def smooth_images(n: int, height: int, width: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """n uint8 images (n, H, W) or (n, H, W, C): smooth gradients plus noise, so a resize has something to average."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    base = (rows * 200 / height + cols * 50 / width)[None, :, :, None]  # (1, H, W, 1)
    images = np.clip(base + rng.normal(0, 25, (n, height, width, channels)), 0, 255).astype(np.uint8)
    return images[..., 0] if channels == 1 else images


def pil_fit(pixels: np.ndarray) -> np.ndarray:
    """The expected result, written with PIL alone: crop the central square, then resize it with LANCZOS."""
    image = Image.fromarray(pixels)
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)).resize((28, 28), Image.Resampling.LANCZOS))


def write_folder(root: Path, height: int, width: int, mode: str = "L", per_class: int = 6) -> dict[Path, np.ndarray]:
    """<root>/train/<class>/*.png and <root>/test/<class>/*.png at H x W; returns each file's pixels."""
    written = {}
    for split, count in (("train", per_class), ("test", 2)):
        for label in (0, 1):
            folder = root / split / str(label)
            folder.mkdir(parents=True)
            channels = 1 if mode == "L" else 3
            for i, pixels in enumerate(smooth_images(count, height, width, channels, seed=10 * label + len(written))):
                Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
                written[folder / f"img{i:03d}.png"] = pixels
    return written


def write_export(path: Path, height: int, width: int, channels: int = 1) -> dict[str, np.ndarray]:
    arrays = {"train_images": smooth_images(12, height, width, channels), "train_labels": np.repeat([0, 1], 6)[:, None],
              "test_images": smooth_images(4, height, width, channels, seed=1), "test_labels": np.array([0, 1, 0, 1])}
    np.savez(path, **arrays)
    return arrays


SIZES = [(64, 64), (40, 32), (32, 40)]  # (H, W): square, taller than wide, wider than tall
SIZE_IDS = ["64x64", "32x40-tall", "40x32-wide"]


@pytest.mark.parametrize(("height", "width"), SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_fit_image_is_pils_centre_crop_and_lanczos(height: int, width: int, channels: int) -> None:
    pixels = smooth_images(1, height, width, channels)[0]
    fitted = fit_image(pixels)
    assert fitted.shape == ((28, 28) if channels == 1 else (28, 28, 3)) and fitted.dtype == np.uint8
    np.testing.assert_array_equal(fitted, pil_fit(pixels))
    same = smooth_images(1, 28, 28, channels)[0]
    assert fit_image(same) is same  # already the federation's size: untouched


@pytest.mark.parametrize(("height", "width"), SIZES, ids=SIZE_IDS)
def test_an_image_folder_at_another_size_loads_at_28x28(tmp_path: Path, height: int, width: int) -> None:
    """Each PNG is resized by the site; the pixels are PIL's resize of the file, and LocalData says what was done."""
    written = write_folder(tmp_path / "images", height, width, mode="RGB")
    local = read_local_data(tmp_path / "images", "retinamnist")  # 3 channels, 5 classes
    assert local.format == DataFormat.FOLDER and local.image_shape == (3, 28, 28)
    train_files = sorted(f for f in written if f.parts[-3] == "train")
    expected = normalize(np.stack([pil_fit(written[f]) for f in train_files]))  # (N, 3, 28, 28)
    np.testing.assert_array_equal(local.splits["train"].images, expected)
    assert local.preprocessing == Preprocessing(smallest_source=(height, width), largest_source=(height, width),
                                                cropped=height != width, resized_to=28, method=ResizeMethod.LANCZOS)


@pytest.mark.parametrize(("height", "width"), SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_an_npz_export_at_another_size_loads_at_28x28(tmp_path: Path, height: int, width: int, channels: int) -> None:
    """uint8 arrays of another size are resized image by image, the same way as files."""
    arrays = write_export(tmp_path / "site.npz", height, width, channels)
    local = read_local_data(tmp_path / "site.npz", "breastmnist" if channels == 1 else "retinamnist")
    assert local.image_shape == (channels, 28, 28)
    for split in ("train", "test"):
        expected = normalize(np.stack([pil_fit(image) for image in arrays[f"{split}_images"]]))
        np.testing.assert_array_equal(local.splits[split].images, expected)
    assert local.preprocessing is not None and local.preprocessing.cropped == (height != width)
    assert local.preprocessing.source_size() == f"{width}x{height}"


def test_an_export_with_a_trailing_channel_axis_and_images_at_28x28_need_nothing(tmp_path: Path) -> None:
    """(N, H, W, 1) grayscale is resized like (N, H, W); an export already at 28x28 records no preprocessing."""
    np.savez(tmp_path / "one.npz", train_images=smooth_images(12, 40, 32)[..., None], train_labels=np.repeat([0, 1], 6))
    assert read_local_data(tmp_path / "one.npz", "breastmnist").image_shape == (1, 28, 28)
    write_export(tmp_path / "native.npz", 28, 28)
    assert read_local_data(tmp_path / "native.npz", "breastmnist").preprocessing is None
    assert preprocessing_of([(28, 28)]) is None and preprocessing_of([]) is None


def test_a_folder_of_mixed_sizes_records_the_range(tmp_path: Path) -> None:
    """Each image is resized on its own, so sizes may differ; the manifest gets each side's smallest and largest."""
    write_folder(tmp_path / "images", 64, 64)
    Image.fromarray(smooth_images(1, 90, 120)[0]).save(tmp_path / "images" / "train" / "1" / "wide.png")
    local = read_local_data(tmp_path / "images", "breastmnist")
    assert len(local.splits["train"]) == 13 and local.image_shape == (1, 28, 28)
    assert local.preprocessing is not None and local.preprocessing.cropped
    assert (local.preprocessing.smallest_source, local.preprocessing.largest_source) == ((64, 64), (90, 120))
    assert local.preprocessing.source_size() == "64x64 to 120x90"


def test_check_notes_the_resize_and_its_json_carries_it(tmp_path: Path) -> None:
    """`site-agent check` says the site resizes (and crops) the images; that is a note, not a refusal."""
    write_folder(tmp_path / "images", 40, 32, per_class=12)  # the default policy's 10 per class, for the CLI
    report = check_data(tmp_path / "images", "breastmnist", POLICY)
    assert report.ok and report.image_shape == (1, 28, 28) and report.preprocessing is not None
    note = ("images are 32x40: the site centre-crops them to a square and resizes them to 28x28 (LANCZOS) before "
            "distilling, and each release's manifest records it")
    assert note in report.notes
    shown = runner.invoke(app, ["check", "--data", str(tmp_path / "images"), "--dataset", "breastmnist"])
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.output.split())  # rich wraps long notes
    assert "images 28x28x1 (resized from 32x40)" in flat and f"note: {note}" in flat and "ok: fit to distill" in flat
    as_json = runner.invoke(app, ["check", "--data", str(tmp_path / "images"), "--dataset", "breastmnist", "--json"])
    assert '"cropped": true' in as_json.output and '"method": "lanczos"' in as_json.output
    write_folder(tmp_path / "square", 64, 64)
    square = check_data(tmp_path / "square", "breastmnist", POLICY)
    assert "images are 64x64: the site resizes them to 28x28 (LANCZOS) before distilling" in " ".join(square.notes)
    assert "enlarged" not in " ".join(square.notes)
    write_folder(tmp_path / "small", 16, 20)
    small = check_data(tmp_path / "small", "breastmnist", POLICY)
    assert small.ok and "images under 28 pixels a side are enlarged, which adds no detail" in " ".join(small.notes)


def test_a_release_signs_the_preprocessing_into_its_manifest(keys, tmp_path: Path) -> None:
    """A site distilling a 40x32 export releases 28x28 images; the coordinator opens a manifest that says how."""
    coordinator, _ = keys
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 12)
    images = np.clip(rng.integers(40, 215, (2, 40, 32))[labels] + rng.normal(0, 20, (24, 40, 32)), 0, 255)
    np.savez(tmp_path / "export.npz", train_images=images.astype(np.uint8), train_labels=labels)
    quiet = PrivacyLimits(shadow_models=0, train_epochs=2, max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None,
                          min_nearest_real_quantile=None)
    settings = SiteSettings(site_id="site-0", key_dir=tmp_path / "keys" / "site-0",
                            data_root=str(tmp_path / "export.npz"), device="cpu", verify_md5=True,
                            policy=SitePolicy(min_real_per_class=5, privacy=quiet), cache_dir=tmp_path / "cache")
    request = DistillRequest(run_id="r1", nonce="cd" * 32, dataset="breastmnist",
                             distill=DMConfig(ipc=2, iterations=2, network=NetworkSpec(depth=2, width=16)))
    release, _ = prepare_release(request, settings, progress=False)
    opened = receive_bundle(release.sealed, Expectation(request, (1, 28, 28), 2, 1 << 20), coordinator, set())
    assert opened.manifest.image_shape == (1, 28, 28)
    assert opened.manifest.preprocessing == Preprocessing(smallest_source=(40, 32), largest_source=(40, 32),
                                                          cropped=True, resized_to=28, method=ResizeMethod.LANCZOS)


@pytest.mark.realdata
def test_the_pbc_blood_cell_folder_loads_as_bloodmnist_does() -> None:
    """The hospital-style PBC folder (RGB 128x128 PNGs, 8 class folders) loads at 28x28, and each test image is
    within 2 grey levels of the BloodMNIST-recipe 28x28 image made from the same source (0.13 on average)."""
    if not (PBC / "images" / "test").is_dir():
        pytest.skip(f"the PBC blood-cell image folder is not at {PBC / 'images'} (see shared/data/pbc-blood-cells)")
    local = read_local_data(PBC / "images", "bloodmnist")
    assert local.image_shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert local.preprocessing is not None and local.preprocessing.source_size() == "128x128"
    assert not local.preprocessing.cropped
    test = local.splits["test"]
    assert len(test) == 1025 and test.class_counts(8) == [73, 187, 93, 173, 73, 85, 200, 141]
    assert all(n > 0 for n in local.splits["train"].class_counts(8))
    with (PBC / "manifest.csv").open() as file:
        rows = sorted((r["folder_path"], int(r["npz_index"])) for r in csv.DictReader(file)
                      if r["folder_path"].startswith("images/test/"))
    with np.load(PBC / "pbc-blood-cells_28.npz") as npz:
        recipe = npz["test_images"][[index for _, index in rows]]  # (1025, 28, 28, 3), in the reader's file order
    difference = np.abs(denormalize(test.images).astype(int) - recipe.astype(int))
    assert difference.mean() < 0.2 and difference.max() <= 2


def test_an_export_may_say_how_its_images_were_resized_before_it_was_written(tmp_path: Path) -> None:
    """A 28x28 export with a 'preprocessing' record carries it into LocalData; a bad or untrue record is refused."""
    record = Preprocessing(smallest_source=(128, 128), largest_source=(128, 128), cropped=False, resized_to=28)
    labels = np.repeat([0, 1], 6)
    for name, images, entry in (("said.npz", smooth_images(12, 28, 28), record.model_dump_json()),
                                ("garbled.npz", smooth_images(12, 28, 28), '{"resized_to": 28}'),
                                ("untrue.npz", smooth_images(12, 64, 64), record.model_dump_json())):
        np.savez(tmp_path / name, train_images=images, train_labels=labels, preprocessing=np.array(entry))
    assert read_local_data(tmp_path / "said.npz", "breastmnist").preprocessing == record
    with pytest.raises(DataError, match="'preprocessing' entry is not a resize record: field 'smallest_source'"):
        read_local_data(tmp_path / "garbled.npz", "breastmnist")
    with pytest.raises(DataError, match="resized to 28x28, but they are stored at another size"):
        read_local_data(tmp_path / "untrue.npz", "breastmnist")
