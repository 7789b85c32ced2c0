"""Datasets as device-resident uint8 tensors, fixed splits, and augmentation on whole batches.

`load_splits("mnist", device)` returns train / val / test images (N×28×28 uint8) and labels on the
device; batches are index slices of those tensors and `augment_batch` transforms them on the device.
"""
from __future__ import annotations

import functools
import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import ConfigError, DataUnavailableError

VAL_SIZE = 5_000  # the last 5,000 training images are the fixed validation split
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    classes: tuple[str, ...]
    mean: float  # of pixel values scaled to [0, 1] over the training split
    std: float


DIGITS = tuple(str(i) for i in range(10))
DIGIT_DATASETS = ("mnist", "digits")  # datasets of digits 0-9: what a drawing set can join and be read by
GARMENTS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
POOLED = "mnist+fashion"  # both datasets at once, for pre-training a backbone on two domains
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "MNIST handwritten digits", DIGITS, 0.1307, 0.3081),
    "fashion-mnist": DatasetInfo("fashion-mnist", "Fashion-MNIST clothing", GARMENTS, 0.2860, 0.3530),
    # Pooled with ten shared outputs: digit i and garment i are class i. A backbone pre-trained on it has seen
    # both domains; transfer experiments replace its output layer anyway, so the pairing only has to be fixed.
    POOLED: DatasetInfo(POOLED, "MNIST + Fashion-MNIST pooled (digit i and garment i share class i)",
                        tuple(f"{d} / {g}" for d, g in zip(DIGITS, GARMENTS)), 0.2083, 0.3403),
    "digits": DatasetInfo("digits", "scikit-learn digits (8×8, upscaled; built-in fallback)", DIGITS,
                          0.1320, 0.2970),
}
FALLBACK = "digits"


@dataclass
class Splits:
    """One dataset on one device: uint8 images (N, 28, 28) and int64 labels per split."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def to(self, device: torch.device | str) -> "Splits":
        moved = {k: getattr(self, k).to(device) for k in
                 ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return Splits(self.info, **moved)

    def limit_train(self, n: int | None) -> "Splits":
        """Only the first `n` training images (the validation and test splits are unchanged)."""
        if n is None or n >= len(self.train_y):
            return self
        return Splits(self.info, self.train_x[:n], self.train_y[:n], self.val_x, self.val_y,
                      self.test_x, self.test_y)

    def per_class(self, k: int, seed: int) -> "Splits":
        """A class-balanced training split: `k` images of every class, drawn with `seed` (the others unchanged).

        The same (k, seed) always draws the same images, and a larger k for the same seed keeps the smaller
        k's images, so few-label runs differ only in how many labels they see.
        """
        gen = torch.Generator().manual_seed(seed)
        labels = self.train_y.cpu()
        picked = []
        for cls in range(len(self.info.classes)):
            idx = torch.nonzero(labels == cls).flatten()
            if len(idx) < k:
                raise ConfigError(f"The training split has only {len(idx):,} images of class "
                                  f"{self.info.classes[cls]!r}; choose at most that many per class.", field="per_class")
            picked.append(idx[torch.randperm(len(idx), generator=gen)[:k]])
        keep = torch.stack(picked, 1).flatten().to(self.train_y.device)  # interleaved: class 0, 1, ..., 9, 0, ...
        return Splits(self.info, self.train_x[keep], self.train_y[keep], self.val_x, self.val_y,
                      self.test_x, self.test_y)

    def repeated(self, times: int) -> "Splits":
        """The training split `times` over (few labelled images make an epoch of several passes)."""
        if times <= 1:
            return self
        return Splits(self.info, self.train_x.repeat(times, 1, 1), self.train_y.repeat(times), self.val_x,
                      self.val_y, self.test_x, self.test_y)

    def with_extra_train(self, images: torch.Tensor, labels: torch.Tensor, times: int = 1) -> "Splits":
        """More training images (uint8 N×28×28 and labels), `times` over, after the dataset's own."""
        return Splits(self.info, torch.cat([self.train_x, images.to(self.train_x.device).repeat(times, 1, 1)]),
                      torch.cat([self.train_y, labels.to(self.train_y.device).repeat(times)]), self.val_x,
                      self.val_y, self.test_x, self.test_y)

    def with_val_in_train(self) -> "Splits":
        """Train on train + validation (as the article did); validation figures are then not held out."""
        return Splits(self.info, torch.cat([self.train_x, self.val_x]), torch.cat([self.train_y, self.val_y]),
                      self.val_x, self.val_y, self.test_x, self.test_y)

    def stats(self) -> dict[str, float | list[int]]:
        """Training-split pixel statistics and images per class (for the Home page)."""
        pixels = self.train_x.float().div(255.0)
        return {"mean": pixels.mean().item(), "std": pixels.std().item(),
                "ink_fraction": (pixels > 0.5).float().mean().item(),
                "class_counts": torch.bincount(self.train_y, minlength=len(self.info.classes)).tolist()}

    def samples(self, cls: int, n: int, seed: int) -> torch.Tensor:
        """`n` random training images of class `cls` (uint8, n×28×28), reproducible for `seed`."""
        idx = torch.nonzero(self.train_y == cls).flatten()
        pick = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:n]
        return self.train_x[idx[pick]]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def data_root() -> Path:
    """Where datasets live: $DIGIT_LAB_DATA, else a per-user cache folder."""
    env = os.environ.get("DIGIT_LAB_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "digit-lab" / "data"


def offline() -> bool:
    """True when downloads must not be attempted ($DIGIT_LAB_OFFLINE=1)."""
    return os.environ.get("DIGIT_LAB_OFFLINE", "").lower() in {"1", "true", "yes"}


def is_available(name: str) -> bool:
    """Whether `name` can be loaded without a download."""
    if name == "digits":
        return True
    if name == "mnist":
        return _torchvision_files_present("MNIST")
    if name == "fashion-mnist":
        return _torchvision_files_present("FashionMNIST") or _debian_fashion_present()
    if name == POOLED:
        return is_available("mnist") and is_available("fashion-mnist")
    return False


def resolve_dataset(name: str) -> tuple[str, str | None]:
    """The dataset to use for `name` and a notice when falling back to the built-in digits.

    The UI uses this so the app runs anywhere; the CLI loads `name` as asked and fails clearly.
    """
    if name not in DATASETS:
        raise DataUnavailableError(f"Unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}.")
    if is_available(name):
        return name, None
    if not offline():
        try:
            _load_cpu(name, str(data_root()))  # downloads through torchvision when online
            return name, None
        except DataUnavailableError:
            pass
    return FALLBACK, (f"{DATASETS[name].title} is not available in {data_root()} and cannot be "
                      f"downloaded, so the app uses the built-in scikit-learn digits (1,797 small "
                      f"images) instead. Set DIGIT_LAB_DATA to a folder holding {_expected(name)}.")


def load_splits(name: str, device: torch.device | str = "cpu") -> Splits:
    """All three splits of dataset `name` on `device` (loaded once per process, then copied)."""
    if name not in DATASETS:
        raise DataUnavailableError(f"Unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}.")
    return _load_cpu(name, str(data_root())).to(device)


# -- loaders -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _load_cpu(name: str, root: str) -> Splits:
    info = DATASETS[name]
    if name == POOLED:  # each dataset's own splits, side by side
        parts = [_load_cpu(part, root) for part in ("mnist", "fashion-mnist")]
        return Splits(info, *(torch.cat([getattr(p, k) for p in parts]) for k in
                              ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")))
    if name == "digits":
        (tx, ty), (sx, sy) = _sklearn_digits()
    elif name == "fashion-mnist" and not _torchvision_files_present("FashionMNIST") and _debian_fashion_present():
        tx, ty = _read_idx_files(DEBIAN_FASHION, "train")
        sx, sy = _read_idx_files(DEBIAN_FASHION, "t10k")
    else:
        tx, ty, sx, sy = _torchvision(name, Path(root))
    val = min(VAL_SIZE, len(ty) // 10)
    return Splits(info, tx[:-val], ty[:-val], tx[-val:], ty[-val:], sx, sy)


def _torchvision(name: str, root: Path) -> tuple[torch.Tensor, ...]:
    """MNIST or Fashion-MNIST from torchvision's layout under `root` (`<Folder>/raw/`), downloaded through
    torchvision first when the files are missing and downloads are possible."""
    folder = "MNIST" if name == "mnist" else "FashionMNIST"
    if not _torchvision_files_present(folder):
        if offline():
            raise DataUnavailableError(_missing_message(name))
        from torchvision import datasets  # slow to import (~3 s: it pulls in torch._dynamo); only to download

        try:
            getattr(datasets, folder)(root=str(root), train=True, download=True)
            getattr(datasets, folder)(root=str(root), train=False, download=True)
        except (RuntimeError, OSError) as error:
            raise DataUnavailableError(f"{_missing_message(name)} (download failed: {error})") from error
    raw = root / folder / "raw"
    return (*_read_idx_files(raw, "train", ""), *_read_idx_files(raw, "t10k", ""))


def _torchvision_files_present(folder: str) -> bool:
    raw = data_root() / folder / "raw"
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    return all((raw / stem).is_file() for stem in stems)


def _debian_fashion_present() -> bool:
    return all((DEBIAN_FASHION / f"{split}-{kind}.gz").is_file()
               for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def _read_idx_files(folder: Path, split: str, suffix: str = ".gz") -> tuple[torch.Tensor, torch.Tensor]:
    """One split's images (N×28×28 uint8) and labels (N, int64) from IDX files, plain or gzipped (`suffix`)."""
    images_path, labels_path = (folder / f"{split}-{kind}{suffix}" for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    images, labels = read_idx(images_path, dims=3), read_idx(labels_path, dims=1).long()
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataUnavailableError(f"{images_path} holds {tuple(images.shape)} images for {len(labels)} labels in "
                                   f"{labels_path}; expected N×28×28 images, one per label.")
    return images, labels


IDX_UNSIGNED_BYTE = 0x08


def read_idx(path: Path, dims: int) -> torch.Tensor:
    """An IDX file of unsigned bytes with `dims` dimensions (the format MNIST is published in), plain or gzipped.

    Checked as torchvision's `read_image_file`/`read_label_file` check it (two zero bytes, the element type, the
    number of dimensions), and the data must fill the declared shape exactly; the tests compare the result with
    torchvision's readers on the real files. Read here with numpy because importing torchvision costs ~3 s (it
    pulls in torch._dynamo): most of the dashboard's first page and of a training process's start.
    """
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":  # gzip's magic number, whatever the file is called
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DataUnavailableError(f"Could not read {path} as an IDX file (MNIST's format): {error}.") from error
    header = 4 + 4 * dims
    if len(data) < header or data[:2] != b"\0\0" or data[2] != IDX_UNSIGNED_BYTE or data[3] != dims:
        raise DataUnavailableError(f"{path} is not an IDX file of {dims}-dimensional unsigned bytes (MNIST's "
                                   f"format): its header's magic number is {data[:4].hex() or 'missing'}; the file "
                                   f"is damaged or of another kind.")
    shape = struct.unpack(f">{dims}I", data[4:header])
    if len(data) - header != math.prod(shape):
        raise DataUnavailableError(f"{path} declares {'×'.join(map(str, shape))} bytes of data but holds "
                                   f"{len(data) - header}: the file is truncated or damaged.")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy())


def _expected(name: str) -> str:
    if name == POOLED:
        return f"both {_expected('mnist')} and {_expected('fashion-mnist')}"
    folder = "MNIST" if name == "mnist" else "FashionMNIST"
    return (f"{folder}/raw/ with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte")


def _missing_message(name: str) -> str:
    return (f"{DATASETS[name].title} is not in {data_root()} and downloads are unavailable. Expected "
            f"{data_root()}/{_expected(name)}; set DIGIT_LAB_DATA to the folder that holds them, or "
            f"use --dataset digits (built in).")


def outside_digits(whole_square: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits (UCI: 43 writers, none of them MNIST's) as uint8 28×28 images and labels, the
    three splits of load_splits("digits") in order: handwriting from outside MNIST, which the starter is measured
    on and never trained on. `whole_square`: the same digits in the same order, blown up bicubically over the whole
    28×28 square instead of into MNIST's 20×20 box, the other plain way a tool brings them to canvas size."""
    if whole_square:
        (train_x, train_y), (test_x, test_y) = _sklearn_digits(whole_square=True)
        return torch.cat([train_x, test_x]).numpy(), torch.cat([train_y, test_y]).numpy()
    s = load_splits("digits")
    return torch.cat([s.train_x, s.val_x, s.test_x]).numpy(), torch.cat([s.train_y, s.val_y, s.test_y]).numpy()


def from_small(small: torch.Tensor) -> torch.Tensor:
    """Small (N, 1, h, w) digits in [0, 1] made MNIST-like: bilinear to the 20×20 box, centred in 28×28, uint8
    (N, 28, 28). How scikit-learn's 8×8 digits, and MNIST digits coarsened by core.data.restroke.low_resolution,
    reach 28×28."""
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    return (F.pad(big, (4, 4, 4, 4)).squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8)


def _sklearn_digits(whole_square: bool = False) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                       tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's 1,797 8×8 digits, made MNIST-like: 20×20 box, centred in 28×28, 0..255 (`whole_square`: bicubic
    over all of 28×28), as (train, test) in a fixed shuffled order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    if whole_square:
        big = F.interpolate(small, size=(28, 28), mode="bicubic", align_corners=False).squeeze(1)
        images = (big.clamp(0, 1) * 255).round().to(torch.uint8)
    else:
        images = from_small(small)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
    images, labels = images[order], labels[order]
    n_test = 360
    return (images[n_test:], labels[n_test:]), (images[:n_test], labels[:n_test])


# -- batches and augmentation ------------------------------------------------------------------
def unit(images: Any) -> Any:
    """Pixels as float32 in [0, 1]: uint8 (0..255) is divided by 255, floats are taken as already in [0, 1].

    The one place images are scaled; torch in gives torch out (same device), anything else numpy.
    """
    if isinstance(images, torch.Tensor):
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    arr = np.asarray(images)
    return arr.astype(np.float32) / np.float32(255.0) if arr.dtype == np.uint8 else arr.astype(np.float32)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1]; models normalise internally."""
    return unit(images_u8).unsqueeze(1)


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, rotate_deg: float, scale: float,
                  translate_px: float, erase_prob: float, stroke: float = 0.0) -> torch.Tensor:
    """Random rotation, zoom and shift per image (one affine resample), stroke width, then erasing.

    `x` is float (N, 1, H, W) in [0, 1] on any device; `generator` lives on the same device. Never flips.
    """
    n, _, h, w = x.shape
    dev = x.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, device=dev, generator=generator) * (high - low) + low

    angle = uniform(-rotate_deg, rotate_deg) * (math.pi / 180.0)
    zoom = uniform(1.0 - scale, 1.0 + scale)
    shift_x = uniform(-translate_px, translate_px) * (2.0 / w)  # pixels -> normalised coords
    shift_y = uniform(-translate_px, translate_px) * (2.0 / h)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # sampling grid = inverse transform
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if stroke > 0:
        out = _random_stroke_width(out, generator, stroke)
    if erase_prob > 0:
        out = _random_erase(out, generator, erase_prob)
    return out


def _random_stroke_width(x: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Thicken or thin each image's strokes by up to `strength` of a one-pixel cross dilation/erosion.

    Drawn digits come in every pen width; MNIST's strokes are all about two pixels wide.
    """
    n = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1))
    shifts = torch.stack([padded[..., 1:-1, 1:-1], padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
                          padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]])
    thick, thin = shifts.max(0).values, shifts.min(0).values
    amount = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * strength  # <0 thins, >0 thickens
    amount = amount.view(n, 1, 1, 1)
    target = torch.where(amount > 0, thick, thin)
    return x + amount.abs() * (target - x)


def _random_erase(x: torch.Tensor, generator: torch.Generator, prob: float) -> torch.Tensor:
    """Zero one random rectangle (4..10 px a side) in a `prob` fraction of the images."""
    n, _, h, w = x.shape
    dev = x.device
    sizes = torch.randint(4, 11, (2, n), device=dev, generator=generator)
    top = (torch.rand(n, device=dev, generator=generator) * (h - sizes[0] + 1)).long()
    left = (torch.rand(n, device=dev, generator=generator) * (w - sizes[1] + 1)).long()
    chosen = torch.rand(n, device=dev, generator=generator) < prob
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    box = ((rows >= top.view(n, 1, 1)) & (rows < (top + sizes[0]).view(n, 1, 1))
           & (cols >= left.view(n, 1, 1)) & (cols < (left + sizes[1]).view(n, 1, 1)))
    return x.masked_fill((box & chosen.view(n, 1, 1)).unsqueeze(1), 0.0)
