"""``imagefolder:PATH``: a folder with one subfolder of images per class (torchvision's ImageFolder layout).

Layout, decided from the folders alone; whatever could be read two ways is a ValueError naming the folder:

- ``PATH/<class>/<image>``: the class folders sit at the root and are split per class by ``seed``.
- ``PATH/train/<class>/<image>`` with optional ``val/`` and ``test/`` in the same layout: used as given,
  a missing one carved out of ``train/``. A root holding ``train/``, ``val/`` or ``test/`` is this
  layout, so it is refused when ``train/`` is missing, when other folders sit beside them (is
  ``train`` a class?), or when the class folders of ``val/``/``test/`` differ from those of ``train/``.
- Images sit directly in their class folder: a class folder with a (non-hidden) sub-folder holding
  files is refused as a nested layout, and so is a data set of fewer than two classes.
- Left out, logged and listed in ``DataSplits.skipped`` with the reason: files outside the class
  folders (``PATH/readme.txt``, ``PATH/train/stray.png``), hidden folders (``.git``) and files in them,
  and files PIL cannot read as images (``notes.txt``, ``.DS_Store``). Every other file is opened with
  PIL whatever its name; one that fails to decode, or whose name says it is an image (an extension PIL
  registers a reader for), is a :class:`BadImageError` naming it up front (with
  ``skip_bad_images=True``: left out, logged, listed in ``skipped``). Images are read lazily afterwards.

Pixels become floats in [0, 1] by the range of their mode (:func:`pixels_in_unit_range`); channels
are 1 if every image is grey, else 3 (grey images repeated). Size: kept if all images share one,
else each is resized (shorter side) and centre-cropped to 64 x 64, or to ``image_size`` when given.
Normalization maps [0, 1] to [-1, 1] (mean 0.5, std 0.5 per channel).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from sepconv.data.augment import light_augmentation
from sepconv.data.splits import (
    DataSplits,
    ImageTransform,
    SkippedFile,
    check_fractions,
    normalize,
    stratified_split,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DEFAULT_MIXED_SIZE", "BadImageError", "ImageFiles", "load_image_folder", "pixels_in_unit_range"]

logger = logging.getLogger("sepconv.data")

#: The (height, width) images of mixed sizes are resized to when no size is given.
DEFAULT_MIXED_SIZE = (64, 64)
_SPLIT_FOLDERS = ("train", "val", "test")
_UNSIGNED_16_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_EIGHT_BIT_GREY_MODES = {"1", "L", "LA", "La"}
_PALETTE_MODES = {"P", "PA"}
_SIXTEEN_BIT_MAX = 65535


class BadImageError(ValueError):
    """An image file that cannot be decoded (or whose pixels have no known scale); ``path`` names it."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason} (use skip_bad_images=True to skip it)")
        self.path = str(path)
        self.reason = reason


def pixels_in_unit_range(image: Image.Image) -> torch.Tensor:
    """``image`` as a float32 ``C x H x W`` tensor in [0, 1], each mode scaled by its real range.

    8-bit modes divide by 255 (``1``: white is 1.0); 16-bit ``I;16`` by 65535; 32-bit integer ``I``
    by 65535 too, and only when every pixel is in 0..65535 (Pillow gives 16-bit PGM and similar files
    as ``I``; wider values have no known scale, so they are refused); float ``F`` is taken as is, and
    only when finite and in [0, 1]. Colour (RGB, CMYK, YCbCr, ...) goes through Pillow's conversion
    to RGB, C = 3; grey modes give C = 1, and so do palettes whose used colours are all grey (other
    palettes give RGB). Alpha is dropped, not composited: a transparent pixel keeps its colour.
    Multi-frame files give their first frame. Raises ValueError for pixels outside the known range.

    >>> from PIL import Image
    >>> pixels_in_unit_range(Image.new("I;16", (2, 1), 65535)).tolist()
    [[[1.0, 1.0]]]
    """
    mode = image.mode
    if mode in _UNSIGNED_16_BIT_MODES:
        return _channels_first(np.asarray(image, dtype=np.float32) / _SIXTEEN_BIT_MAX)
    if mode == "I" or mode.startswith("I;"):
        values = np.asarray(image)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > _SIXTEEN_BIT_MAX:
            raise ValueError(
                f"{mode} pixels range over {low}..{high}: only 0..{_SIXTEEN_BIT_MAX} (16-bit data) "
                "has a known scale"
            )
        return _channels_first(values.astype(np.float32) / _SIXTEEN_BIT_MAX)
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise ValueError(
                f"float pixels range over {values.min()}..{values.max()}: expected finite values in [0, 1]"
            )
        return _channels_first(values.copy())
    if mode in _EIGHT_BIT_GREY_MODES:
        eight_bit = np.asarray(image.convert("L"))
    elif mode in _PALETTE_MODES:
        # Through RGBA, which Pillow converts without warning about palette transparency.
        eight_bit = np.asarray(image.convert("RGBA"))[..., :3]
        if (eight_bit == eight_bit[..., :1]).all():
            eight_bit = eight_bit[..., 0]
    else:
        eight_bit = np.asarray(image.convert("RGB"))
    return _channels_first(eight_bit.astype(np.float32) / 255.0)


def _channels_first(pixels: np.ndarray) -> torch.Tensor:
    """H x W (grey) or H x W x C numpy pixels as a C x H x W tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels))
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def _read_pixels(path: str) -> torch.Tensor:
    """Decode ``path`` with :func:`pixels_in_unit_range`; any failure is a BadImageError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            return pixels_in_unit_range(opened)
    except Exception as error:  # any decoder or range failure is this file's fault; say which file
        raise BadImageError(path, str(error) or type(error).__name__) from error


class ImageFiles(Dataset[tuple[torch.Tensor, int]]):
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

        if mode not in ("L", "RGB"):
            raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
        self.samples = list(samples)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        self.mode = mode
        self.image_size = image_size
        self.resize = resize
        self.channels = 1 if mode == "L" else 3
        self.mean = (0.5,) * self.channels
        self.std = (0.5,) * self.channels
        self.augment = augment
        self._resize = v2.Compose([v2.Resize(min(image_size)), v2.CenterCrop(image_size)]) if resize else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = _read_pixels(path)
        if image.shape[0] != self.channels:
            if image.shape[0] != 1:  # only a file changed since the scan turns colour in a grey set
                raise BadImageError(path, f"{image.shape[0]} channels in a {self.channels}-channel data set")
            image = image.expand(self.channels, -1, -1)
        if self._resize is not None:
            image = self._resize(image)
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


@functools.cache
def _readable_extensions() -> tuple[str, ...]:
    """Extensions of the formats Pillow can open (not those it can only write, such as .pdf)."""
    from PIL import Image

    return tuple(
        sorted(
            ext for ext, image_format in Image.registered_extensions().items() if image_format in Image.OPEN
        )
    )


def _visible_folders(folder: Path, skipped: list[SkippedFile]) -> list[str]:
    """Sorted names of the non-hidden folders in ``folder``; hidden folders and files go to ``skipped``."""
    from torchvision.datasets.folder import find_classes

    try:
        names, _ = find_classes(folder)
    except FileNotFoundError:  # torchvision's way of saying "no folders here"
        names = []
    skipped += [
        SkippedFile(str(folder / name), "hidden folder, not scanned")
        for name in names
        if name.startswith(".")
    ]
    skipped += [
        SkippedFile(str(entry), "file outside the class folders (it has no class)")
        for entry in sorted(folder.iterdir())
        if not entry.is_dir()
    ]
    return [name for name in names if not name.startswith(".")]


def _split_folders(folder: Path, skipped: list[SkippedFile]) -> tuple[dict[str, Path], list[str]]:
    """The splits (``{"all": folder}`` when the classes sit at the root) and the class names."""
    names = _visible_folders(folder, skipped)
    given = {name: folder / name for name in _SPLIT_FOLDERS if name in names}
    if not given:
        return {"all": folder}, _class_names(folder, names)
    if "train" not in given:
        raise ValueError(
            f"ambiguous layout in {folder}: it holds {', '.join(f'{name}/' for name in given)} but no "
            f"train/; a pre-split folder needs train/ (with optional val/ and test/), and a folder of "
            f"classes cannot name a class {' or '.join(map(repr, given))}"
        )
    others = [name for name in names if name not in _SPLIT_FOLDERS]
    if others:
        raise ValueError(
            f"ambiguous layout in {folder}: train/ marks a pre-split folder (train/, val/, test/ each "
            f"holding class folders), but {folder} also holds {', '.join(f'{name}/' for name in others)}; "
            f"is 'train' a class? Move the classes into train/, or rename train/"
        )
    return given, _class_names(given["train"], _visible_folders(given["train"], skipped))


def _class_names(folder: Path, names: list[str]) -> list[str]:
    """``names``, the class folders found in ``folder``, unless there are fewer than two."""
    if not names:
        raise ValueError(f"no class folders in {folder}: expected one subfolder of images per class")
    if len(names) < 2:
        raise ValueError(
            f"{folder} has 1 class folder ({names[0]!r}): a classifier needs at least 2 classes; add a "
            f"folder of images per class"
        )
    return names


def _class_files(folder: Path, class_names: list[str], skipped: list[SkippedFile]) -> dict[str, list[str]]:
    """Files directly in each class folder (walked by torchvision's make_dataset); nesting is refused."""
    from torchvision.datasets.folder import make_dataset

    class_to_index = {name: label for label, name in enumerate(class_names)}
    walked = make_dataset(folder, class_to_index, is_valid_file=lambda _: True, allow_empty=True)
    files: dict[str, list[str]] = {name: [] for name in class_names}
    nested: set[Path] = set()
    for path, label in walked:
        class_folder = folder / class_names[label]
        inner = Path(path).relative_to(class_folder).parts[:-1]
        hidden = next((part for part in inner if part.startswith(".")), None)
        if not inner:
            files[class_names[label]].append(path)
        elif hidden is not None:
            skipped.append(SkippedFile(path, f"inside the hidden folder {hidden}"))
        else:
            nested.add(class_folder / inner[0])
    if nested:
        count = "is a folder" if len(nested) == 1 else f"and {len(nested) - 1} more are folders"
        raise ValueError(
            f"nested layout in {folder}: images must sit directly in their class folder, but "
            f"{min(nested)} {count} inside a class folder; point imagefolder: at the folder whose "
            f"subfolders are the classes"
        )
    return files


def _opens_as_image(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path):
            return True
    except Exception:  # whatever Pillow raises while identifying, the file is not an image it reads
        return False


class _ImageScan:
    """What decoding every file once found: readable samples per split, channel counts, sizes, skips."""

    def __init__(self, skip_bad_images: bool, skipped: list[SkippedFile]) -> None:
        from torchvision.datasets.folder import has_file_allowed_extension

        self._named_image = functools.partial(has_file_allowed_extension, extensions=_readable_extensions())
        self.skip_bad_images = skip_bad_images
        self.skipped = skipped
        self.channels: set[int] = set()
        self.sizes: set[tuple[int, int]] = set()

    def read(self, class_folder: Path, files: list[str], label: int) -> list[tuple[str, int]]:
        """The images among ``files`` as samples; a class folder without one is an error naming it."""
        readable, not_images, bad = [], [], 0
        for path in files:
            if not self._named_image(path) and not _opens_as_image(path):
                not_images.append(path)
                self.skipped.append(SkippedFile(path, "not an image file PIL can read"))
                continue
            try:
                pixels = _read_pixels(path)
            except BadImageError as error:
                if not self.skip_bad_images:
                    raise
                self.skipped.append(SkippedFile(path, f"unreadable image: {error.reason}"))
                bad += 1
                continue
            self.channels.add(pixels.shape[0])
            self.sizes.add((pixels.shape[1], pixels.shape[2]))
            readable.append((path, label))
        if not readable and not bad:
            found = f" (only {', '.join(Path(path).name for path in not_images[:3])})" if not_images else ""
            raise ValueError(
                f"class {class_folder.name!r} has no images: {class_folder} holds no file PIL can read{found}"
            )
        if not readable:
            raise ValueError(
                f"class {class_folder.name!r} in {class_folder.parent} has no readable images (every image "
                f"in {class_folder} was skipped as unreadable)"
            )
        return readable


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
    skipped: list[SkippedFile] = []
    split_folders, class_names = _split_folders(folder, skipped)
    pool_name = "all" if "all" in split_folders else "train"
    files = {pool_name: _class_files(split_folders[pool_name], class_names, skipped)}
    for split in ("val", "test"):
        if split in split_folders:
            _check_same_classes(split_folders[split], class_names, skipped)
            files[split] = _class_files(split_folders[split], class_names, skipped)

    scan = _ImageScan(skip_bad_images, skipped)
    samples = {
        split: [
            sample
            for label, name in enumerate(class_names)
            for sample in scan.read(split_folders[split] / name, by_class[name], label)
        ]
        for split, by_class in files.items()
    }
    _log_skipped(folder, skipped)

    mode = "L" if scan.channels == {1} else "RGB"
    if image_size is None and len(scan.sizes) == 1:
        size, resize = next(iter(scan.sizes)), False
    else:
        size, resize = (image_size or DEFAULT_MIXED_SIZE), True

    def image_files(split_samples: list[tuple[str, int]]) -> ImageFiles:
        return ImageFiles(split_samples, mode=mode, image_size=size, resize=resize)

    pool = image_files(samples[pool_name])
    carve = [0.0 if "val" in samples else val_fraction, 0.0 if "test" in samples else test_fraction]
    train, val, test = stratified_split(pool.labels, carve, seed=seed, class_names=class_names)
    augmentation = light_augmentation() if augment else None
    return DataSplits(
        train=pool.subset(train, augment=augmentation),
        val=image_files(samples["val"]) if "val" in samples else pool.subset(val),
        test=image_files(samples["test"]) if "test" in samples else pool.subset(test),
        num_classes=len(class_names),
        in_channels=pool.channels,
        image_size=size,
        class_names=class_names,
        name=f"imagefolder:{folder}",
        mean=pool.mean,
        std=pool.std,
        skipped=skipped,
    )


def _check_same_classes(split_folder: Path, class_names: list[str], skipped: list[SkippedFile]) -> None:
    """Refuse a val/ or test/ folder whose class folders are not exactly those of train/."""
    names = set(_visible_folders(split_folder, skipped))
    extra, missing = sorted(names - set(class_names)), sorted(set(class_names) - names)
    if extra:
        raise ValueError(f"{split_folder} has classes that train/ lacks: {', '.join(extra)}")
    if missing:
        raise ValueError(
            f"{split_folder} lacks classes that train/ has: {', '.join(missing)}; every split needs the "
            f"same class folders"
        )


def _log_skipped(folder: Path, skipped: list[SkippedFile]) -> None:
    unreadable = [entry.path for entry in skipped if entry.reason.startswith("unreadable image")]
    others = [str(entry) for entry in skipped if not entry.reason.startswith("unreadable image")]
    if unreadable:
        logger.warning(
            "skipped %d unreadable image(s) in %s: %s", len(unreadable), folder, ", ".join(unreadable[:5])
        )
    if others:
        logger.warning(
            "left out %d file(s) or folder(s) in %s: %s", len(others), folder, "; ".join(others[:5])
        )
