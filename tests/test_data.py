"""Datasets: MNIST splits, the built-in fallback, Fashion-MNIST from Debian, clear messages."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from core.data import datasets as data
from core.data.datasets import DEBIAN_FASHION, DataUnavailableError, is_available, load_splits, resolve_dataset
from tests.conftest import in_ci


def test_mnist_splits_are_device_resident_uint8_with_a_fixed_validation_split(mnist):
    assert mnist.sizes() == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert mnist.train_x.dtype == torch.uint8 and mnist.train_x.shape[1:] == (28, 28)
    assert mnist.train_y.dtype == torch.int64 and set(mnist.test_y.tolist()) == set(range(10))
    again = load_splits("mnist")
    assert torch.equal(again.val_x, mnist.val_x)  # the validation split never moves


def test_missing_mnist_offline_gives_a_message_naming_the_folder_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGIT_LAB_DATA", str(tmp_path))
    monkeypatch.setenv("DIGIT_LAB_OFFLINE", "1")
    assert not is_available("mnist")
    with pytest.raises(DataUnavailableError) as error:
        load_splits("mnist")
    assert str(tmp_path) in str(error.value) and "train-images-idx3-ubyte" in str(error.value)
    name, notice = resolve_dataset("mnist")
    assert name == "digits" and "built-in" in notice


def test_builtin_digits_look_like_mnist(digits):
    assert digits.train_x.shape[1:] == (28, 28) and digits.train_x.dtype == torch.uint8
    total = len(digits.train_y) + len(digits.val_y) + len(digits.test_y)
    assert total == 1797
    ink = digits.train_x.float().mean(0)
    assert ink[:4].sum() == 0 and ink[-4:].sum() == 0 and ink[10:18, 10:18].mean() > 20  # centred in a 20×20 box


def test_fashion_mnist_from_debian(monkeypatch, tmp_path):
    if not data._debian_fashion_present():
        if in_ci():
            pytest.fail(f"dataset-fashion-mnist is not installed in CI ({DEBIAN_FASHION})")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    monkeypatch.setenv("DIGIT_LAB_DATA", str(tmp_path))  # nothing under the data root: Debian's copy is used
    splits = load_splits("fashion-mnist")
    assert splits.sizes() == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert splits.info.classes[9] == "Ankle boot"


def _write_idx_gz(folder, split, n=3, image_magic=0x803, label_magic=0x801):
    pixels = bytes(range(256)) * (n * 28 * 28 // 256 + 1)
    (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">IIII", image_magic, n, 28, 28) + pixels[:n * 28 * 28]))
    (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">II", label_magic, n) + bytes(range(n))))


def test_gzipped_idx_files_with_the_right_header_load(tmp_path):
    _write_idx_gz(tmp_path, "train")
    images, labels = data._read_idx_files(tmp_path, "train")
    assert images.dtype == torch.uint8 and images.shape == (3, 28, 28) and images[0, 0, 5] == 5
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("broken", ["image magic", "label magic", "not gzip", "count mismatch", "truncated",
                                    "empty", "bad gzip"])
def test_a_corrupt_idx_file_is_refused_with_a_message_naming_it(tmp_path, broken):
    _write_idx_gz(tmp_path, "train", image_magic=0x12345678 if broken == "image magic" else 0x803,
                  label_magic=0x803 if broken == "label magic" else 0x801)  # 0x803 = images, not labels
    images = tmp_path / "train-images-idx3-ubyte.gz"
    if broken == "not gzip":
        images.write_bytes(b"<html>404 not found</html>")
    if broken == "count mismatch":
        _write_idx_gz(tmp_path, "train", n=2)
        (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">II", 0x801, 3) + b"\0\1\2"))
    if broken == "truncated":  # the header promises 3 images, the data holds 2.5
        images.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 3, 28, 28) + bytes(28 * 28 * 5 // 2)))
    if broken == "empty":
        images.write_bytes(b"")
    if broken == "bad gzip":
        images.write_bytes(gzip.compress(bytes(5000))[:100])
    with pytest.raises(DataUnavailableError) as error:
        data._read_idx_files(tmp_path, "train")
    named = "labels" if broken == "label magic" else "images"
    assert str(tmp_path / f"train-{named}-idx") in str(error.value)


def test_fashion_mnist_idx_files_read_as_torchvisions_readers_read_them(tmp_path):
    if not data._debian_fashion_present():
        if in_ci():
            pytest.fail(f"dataset-fashion-mnist is not installed in CI ({DEBIAN_FASHION})")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images, labels = data._read_idx_files(DEBIAN_FASHION, "t10k")
    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [1_000] * 10  # Fashion-MNIST's test split is balanced
    for name, ours in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        plain = tmp_path / name  # torchvision's readers take plain files
        plain.write_bytes(gzip.decompress((DEBIAN_FASHION / f"{name}.gz").read_bytes()))
        theirs = (read_image_file if "images" in name else read_label_file)(str(plain))
        assert theirs.dtype == ours.dtype and torch.equal(theirs, ours)


def test_mnist_reads_exactly_as_torchvision_reads_it():
    """Our IDX reader (torchvision's import costs ~3 s) against torchvision's MNIST dataset on the real files."""
    if not data._torchvision_files_present("MNIST"):
        pytest.skip("MNIST is not under the data root")
    from torchvision.datasets import MNIST

    ours = data._torchvision("mnist", data.data_root())
    for train, (images, labels) in ((True, ours[:2]), (False, ours[2:])):
        reference = MNIST(str(data.data_root()), train=train, download=False)
        assert images.dtype == reference.data.dtype and torch.equal(images, reference.data)
        assert labels.dtype == reference.targets.dtype and torch.equal(labels, reference.targets)


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(DataUnavailableError, match="mnist"):
        load_splits("cifar")


def test_statistics_and_class_samples(digits):
    stats = digits.stats()
    assert sum(stats["class_counts"]) == len(digits.train_y) and len(stats["class_counts"]) == 10
    assert 0 < stats["mean"] < 1 and 0 < stats["ink_fraction"] < 1
    sevens = digits.samples(7, 8, seed=1)
    assert sevens.shape == (8, 28, 28) and torch.equal(sevens, digits.samples(7, 8, seed=1))
    labels_of = {int(digits.train_y[i]) for i in range(len(digits.train_y))
                 if any(torch.equal(digits.train_x[i], s) for s in sevens)}
    assert labels_of == {7}


@pytest.mark.parametrize("download_works", [True, False])
def test_missing_files_are_downloaded_through_torchvision_then_read(monkeypatch, tmp_path, download_works):
    """When the files are missing and downloads are allowed, torchvision fetches them (faked here: no network in
    tests) and the same reader reads them; a failed download is a clear message naming the data root."""
    import shutil

    import torchvision.datasets

    source = data.data_root() / "MNIST" / "raw"
    if not data._torchvision_files_present("MNIST"):
        pytest.skip("MNIST is not under the data root")
    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            if not download_works:
                raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            prefix = "train" if train else "t10k"
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
                shutil.copy(source / f"{prefix}-{kind}", raw / f"{prefix}-{kind}")

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    monkeypatch.setenv("DIGIT_LAB_DATA", str(tmp_path))
    monkeypatch.delenv("DIGIT_LAB_OFFLINE")
    if download_works:
        images, labels, test_images, test_labels = data._torchvision("mnist", tmp_path)
        assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
        assert images.shape == (60_000, 28, 28) and test_labels.shape == (10_000,)
    else:
        with pytest.raises(DataUnavailableError, match="download failed") as error:
            data._torchvision("mnist", tmp_path)
        assert str(tmp_path) in str(error.value)
