"""``imagefolder:PATH``: a folder with one subfolder of images per class (torchvision's ImageFolder layout).

``PATH/<class>/<image>`` is split per class by ``seed``; if ``PATH`` has ``train/`` plus ``val/``
and/or ``test/`` subfolders (each in the same layout), those are used as given, and a missing one is
carved out of ``train/``. Every file is decoded once up front, so a corrupt image stops the run
before training starts, naming the file (or, with ``skip_bad_images=True``, is left out, logged and
listed in ``DataSplits.skipped``). Images are read lazily afterwards.

Channels: 1 if every image is grayscale, else 3 (RGB; alpha dropped, palettes expanded). Size: kept
if all images share one, else each is resized (shorter side) and centre-cropped to 64 x 64, or to
``image_size`` when given. Normalization maps [0, 1] to [-1, 1] (mean 0.5, std 0.5 per channel).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sepconv.data.augment import light_augmentation
from sepconv.data.splits import DataSplits, ImageTransform, check_fractions, normalize, stratified_split

__all__ = ["DEFAULT_MIXED_SIZE", "BadImageError", "ImageFiles", "load_image_folder"]

logger = logging.getLogger("sepconv.data")

DEFAULT_MIXED_SIZE = (64, 64)
_GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_SPLIT_FOLDERS = ("train", "val", "test")


class BadImageError(ValueError):
    """An image file that cannot be decoded; ``path`` names it."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(
            f"cannot read image {path}: {reason} (use skip_bad_images=True / --skip-bad-images to skip it)"
        )
        self.path = str(path)


class ImageFiles(Dataset):
    """Image files with labels, decoded on access to ``mode`` ("L" or "RGB") at ``image_size`` (H, W)."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        *,
        mode: str,
        image_size: tuple[int, int],
        resize: bool,
        augment: ImageTransform | None = None,
    ) -> None:
        from torchvision.transforms import v2

        self.samples = list(samples)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        self.mode = mode
        self.image_size = image_size
        self.resize = resize
        channels = 1 if mode == "L" else 3
        self.mean = (0.5,) * channels
        self.std = (0.5,) * channels
        self.augment = augment
        self._resize = v2.Compose([v2.Resize(min(image_size)), v2.CenterCrop(image_size)]) if resize else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image
        from torchvision.transforms.v2 import functional

        path, label = self.samples[index]
        try:
            with Image.open(path) as opened:
                picture = opened.convert(self.mode)
        except Exception as error:  # any decoder failure is this file's fault; say which file
            raise BadImageError(path, str(error) or type(error).__name__) from error
        image = functional.pil_to_tensor(picture)
        if self._resize is not None:
            image = self._resize(image)
        image = image.to(torch.float32).div_(255.0)
        if self.augment is not None:
            image = self.augment(image)
        return normalize(image, self.mean, self.std), label

    def subset(self, indices: torch.Tensor, augment: ImageTransform | None = None) -> ImageFiles:
        """The samples at ``indices``, with ``augment`` for this subset only."""
        return ImageFiles(
            [self.samples[i] for i in indices.tolist()],
            mode=self.mode,
            image_size=self.image_size,
            resize=self.resize,
            augment=augment,
        )


def _class_names(folder: Path) -> list[str]:
    names = sorted(
        entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    if not names:
        raise ValueError(f"no class folders in {folder}: expected one subfolder of images per class")
    return names


def _scan(folder: Path, class_names: list[str]) -> list[tuple[str, int]]:
    """(file, label) for the image files of each class folder under ``folder``; an empty class is an error."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    samples: list[tuple[str, int]] = []
    for label, name in enumerate(class_names):
        class_folder = folder / name
        files = sorted(
            str(path)
            for path in class_folder.rglob("*")
            if path.is_file() and path.name.lower().endswith(IMG_EXTENSIONS)
        )
        if not files:
            raise ValueError(
                f"class {name!r} has no images: {class_folder} holds no files ending in "
                f"{', '.join(IMG_EXTENSIONS)}"
            )
        samples += [(file, label) for file in files]
    return samples


def _inspect(
    samples: list[tuple[str, int]], skip_bad_images: bool, skipped: list[str]
) -> tuple[list, set, set]:
    """Decode every file once; returns the readable samples and the set of (mode, size) seen."""
    from PIL import Image

    readable, modes, sizes = [], set(), set()
    for path, label in samples:
        try:
            with Image.open(path) as opened:
                opened.load()
                modes.add(opened.mode)
                sizes.add(opened.size)
        except Exception as error:  # any decoder failure is this file's fault
            if not skip_bad_images:
                raise BadImageError(path, str(error) or type(error).__name__) from error
            skipped.append(path)
            continue
        readable.append((path, label))
    return readable, modes, sizes


def load_image_folder(
    path: str | Path,
    *,
    seed: int = 0,
    augment: bool = False,
    skip_bad_images: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    image_size: tuple[int, int] | None = None,
) -> DataSplits:
    """Load an image folder (see the module docstring for layouts, channels and sizes) and split it."""
    check_fractions(val_fraction, test_fraction)
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    given = {name: folder / name for name in _SPLIT_FOLDERS if (folder / name).is_dir()}
    explicit = "train" in given and len(given) > 1
    class_names = _class_names(given["train"] if explicit else folder)
    class_index = {name: label for label, name in enumerate(class_names)}
    scanned = (
        {"train": _scan(given["train"], class_names)} if explicit else {"all": _scan(folder, class_names)}
    )
    for split in ("val", "test") if explicit else ():
        if split in given:
            extra = sorted(set(_class_names(given[split])) - set(class_index))
            if extra:
                raise ValueError(f"{given[split]} has classes that train/ lacks: {', '.join(extra)}")
            present = [name for name in class_names if (given[split] / name).is_dir()]
            scanned[split] = [(file, class_index[name]) for file, name in _scan_named(given[split], present)]

    skipped: list[str] = []
    modes: set[str] = set()
    sizes: set[tuple[int, int]] = set()
    for split, samples in scanned.items():
        scanned[split], split_modes, split_sizes = _inspect(samples, skip_bad_images, skipped)
        modes |= split_modes
        sizes |= split_sizes
    if skipped:
        logger.warning(
            "skipped %d unreadable image(s) in %s: %s", len(skipped), folder, ", ".join(skipped[:5])
        )
    _check_every_class_readable(scanned["train" if explicit else "all"], class_names, folder)

    mode = "L" if modes <= _GRAYSCALE_MODES else "RGB"
    if image_size is None and len(sizes) == 1:
        width, height = next(iter(sizes))
        size, resize = (height, width), False
    else:
        size, resize = (image_size or DEFAULT_MIXED_SIZE), True

    def files(samples: list[tuple[str, int]]) -> ImageFiles:
        return ImageFiles(samples, mode=mode, image_size=size, resize=resize)

    pool = files(scanned["train" if explicit else "all"])
    carve = [0.0 if "val" in scanned else val_fraction, 0.0 if "test" in scanned else test_fraction]
    train, val, test = stratified_split(pool.labels, carve, seed=seed, class_names=class_names)
    augmentation = light_augmentation() if augment else None
    return DataSplits(
        train=pool.subset(train, augment=augmentation),
        val=files(scanned["val"]) if "val" in scanned else pool.subset(val),
        test=files(scanned["test"]) if "test" in scanned else pool.subset(test),
        num_classes=len(class_names),
        in_channels=1 if mode == "L" else 3,
        image_size=size,
        class_names=class_names,
        name=f"imagefolder:{folder}",
        mean=pool.mean,
        std=pool.std,
        skipped=skipped,
    )


def _scan_named(folder: Path, class_names: list[str]) -> list[tuple[str, str]]:
    """(file, class name) for a val/test folder, where a class may be absent but not empty."""
    return [(file, class_names[label]) for file, label in _scan(folder, class_names)]


def _check_every_class_readable(samples: list[tuple[str, int]], class_names: list[str], folder: Path) -> None:
    counts = torch.bincount(
        torch.tensor([label for _, label in samples], dtype=torch.int64), minlength=len(class_names)
    )
    empty = [class_names[label] for label in range(len(class_names)) if counts[label] == 0]
    if empty:
        raise ValueError(f"class(es) {', '.join(map(repr, empty))} in {folder} have no readable images")
