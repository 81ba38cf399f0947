"""Training data: image sources, identity split with label remapping, and a resumable sampler.

Sources give ``labels`` (one identity index per image), ``identities`` (names) and
``read(i)`` -> RGB uint8 (H, W, 3), the crop size of the run (112x112 unless the backbone
uses another template, see :func:`crop_size`):

* :class:`ShardSource` -- packed shards written by ``facesphere prepare``;
* :class:`FolderSource` -- identity folders of already-aligned crops (resized to 112 if needed);
* :class:`RecordIOSource` -- insightface ``.rec`` + ``.idx``;
* :class:`CenterCropSource` -- identity folders of face-centred photos (LFW-style), centre-
  cropped: no detection or alignment, only for quick experiments.

:class:`Subset` selects identities and renumbers their labels 0..K-1; :func:`split_identities`
holds out identities for validation.  :class:`EpochSampler` turns (epoch, step) into global
batches deterministically, so a run can resume in the middle of an epoch.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from facesphere.errors import ConfigError, DataError
from facesphere.io.files import IMAGE_SUFFIXES
from facesphere.train.augment import augment, resize, to_tensor
from facesphere.train.config import AugmentConfig, DataConfig

CROP = (112, 112)
"""The default crop size (height, width): the ``standard112`` template."""


def crop_size(template: str) -> tuple[int, int]:
    """(height, width) of the crops for the alignment template named ``template``."""
    from facesphere.align.templates import TEMPLATES

    if template not in TEMPLATES:
        raise ConfigError(f"unknown alignment template {template!r}")
    width, height = TEMPLATES[template].size
    return (height, width)


class Source(Protocol):
    identities: list[str]
    labels: np.ndarray

    def __len__(self) -> int: ...

    def read(self, i: int) -> np.ndarray: ...


def decode(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to RGB uint8."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def to_crop(image: np.ndarray, size: tuple[int, int] = CROP) -> np.ndarray:
    """An aligned crop of any size as uint8 of ``size`` (height, width)."""
    if image.shape[:2] == size:
        return image
    return np.clip(resize(image.astype(np.float32), size) + 0.5, 0, 255).astype(np.uint8)


def center_crop(image: np.ndarray, fraction: float, size: tuple[int, int] = CROP) -> np.ndarray:
    """The central square whose side is ``fraction`` of the shorter side, as ``size``."""
    height, width = image.shape[:2]
    side = max(1, round(min(height, width) * fraction))
    top, left = (height - side) // 2, (width - side) // 2
    return to_crop(image[top : top + side, left : left + side], size)


def _identity_folders(root: Path) -> tuple[list[str], list[Path], np.ndarray]:
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of identity folders")
    names: list[str] = []
    files: list[Path] = []
    labels: list[int] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            continue
        labels.extend([len(names)] * len(images))
        files.extend(images)
        names.append(folder.name)
    if not names:
        raise DataError(f"{root} holds no identity folders with images")
    return names, files, np.asarray(labels, dtype=np.int64)


class FolderSource:
    """Identity folders of aligned crops."""

    def __init__(self, root: str | Path, size: tuple[int, int] = CROP) -> None:
        self.identities, self.files, self.labels = _identity_folders(Path(root))
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> np.ndarray:
        with Image.open(self.files[i]) as image:
            return to_crop(np.asarray(image.convert("RGB")), self.size)


class CenterCropSource(FolderSource):
    """Identity folders of face-centred photos, centre-cropped (no alignment)."""

    def __init__(
        self, root: str | Path, fraction: float = 0.5, size: tuple[int, int] = CROP
    ) -> None:
        super().__init__(root, size)
        self.fraction = fraction

    def read(self, i: int) -> np.ndarray:
        with Image.open(self.files[i]) as image:
            return center_crop(np.asarray(image.convert("RGB")), self.fraction, self.size)


class ShardSource:
    """Packed shards from ``facesphere prepare``; ``template`` must be the one they were
    aligned to (crops of another template would be resized to a wrong geometry)."""

    def __init__(self, root: str | Path, template: str = "standard112") -> None:
        from facesphere.train.shards import ShardReader

        self.reader = ShardReader(root)
        found = self.reader.manifest.get("template", "standard112")
        if found != template:
            raise DataError(
                f"{root} holds {found} crops but the backbone needs {template} "
                f"(prepare them with --template {template})"
            )
        self.size = crop_size(template)
        self.identities = self.reader.identities
        self.labels = self.reader.labels

    def __len__(self) -> int:
        return len(self.reader)

    def read(self, i: int) -> np.ndarray:
        return to_crop(decode(self.reader.image_bytes(i)), self.size)


class RecordIOSource:
    """An insightface RecordIO file (``source`` is the ``.rec`` or its folder)."""

    def __init__(self, source: str | Path, size: tuple[int, int] = CROP) -> None:
        from facesphere.train.recordio import RecordIOFaces

        self.size = size
        path = Path(source)
        if path.is_dir():
            path = path / "train.rec"
        self.faces = RecordIOFaces(path)
        self.labels = self.faces.labels
        count = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.identities = [str(i) for i in range(count)]

    def __len__(self) -> int:
        return len(self.faces)

    def read(self, i: int) -> np.ndarray:
        return to_crop(decode(self.faces.image_bytes(i)), self.size)


def open_source(config: DataConfig, template: str = "standard112") -> Source:
    """Build the source named by ``config.kind``, giving crops for ``template``."""
    size = crop_size(template)
    if config.kind == "shards":
        return ShardSource(config.source, template)
    if config.kind == "folder":
        return FolderSource(config.source, size)
    if config.kind == "recordio":
        return RecordIOSource(config.source, size)
    if config.kind == "center_crop":
        return CenterCropSource(config.source, config.crop_fraction, size)
    raise ConfigError(f"unknown data kind {config.kind!r}", key="data.kind")


class Subset:
    """The images of some identities of a source, with labels renumbered 0..K-1."""

    def __init__(self, source: Source, identities: Sequence[int]) -> None:
        self.source = source
        self.identity_ids = np.asarray(sorted(identities), dtype=np.int64)
        remap = np.full(len(source.identities), -1, dtype=np.int64)
        remap[self.identity_ids] = np.arange(len(self.identity_ids))
        mask = remap[source.labels] >= 0
        self.indices = np.nonzero(mask)[0]
        self.labels = remap[source.labels[self.indices]]
        self.identities = [source.identities[i] for i in self.identity_ids]

    @property
    def num_classes(self) -> int:
        return len(self.identity_ids)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, i: int) -> np.ndarray:
        return self.source.read(int(self.indices[i]))


def split_identities(source: Source, config: DataConfig, seed: int) -> tuple[Subset, Subset | None]:
    """Training and held-out validation subsets, split by identity.

    Identities with fewer than ``min_images`` images are dropped; ``max_identities`` keeps the
    first ones (sorted order) for the training side; ``val_identities`` are drawn at random
    (seeded) before that.
    """
    counts = np.bincount(source.labels, minlength=len(source.identities))
    usable = np.nonzero(counts >= config.min_images)[0]
    rng = np.random.default_rng(seed)
    val_ids: np.ndarray = np.zeros(0, np.int64)
    if config.val_identities:
        if config.val_identities >= len(usable):
            raise ConfigError(
                f"{config.val_identities} held-out identities leave no training identity "
                f"out of {len(usable)}",
                key="data.val_identities",
            )
        val_ids = np.sort(rng.choice(usable, size=config.val_identities, replace=False))
    train_ids = np.setdiff1d(usable, val_ids)
    if config.max_identities:
        train_ids = train_ids[: config.max_identities]
    if len(train_ids) == 0:
        raise DataError("no training identities left after filtering")
    return Subset(source, train_ids), (Subset(source, val_ids) if len(val_ids) else None)


class EpochSampler:
    """Global batches of sample indices: a seeded permutation per epoch, last partial batch
    dropped.  Rank ``r`` of ``world`` takes rows ``r*B .. (r+1)*B`` of each global batch."""

    def __init__(self, size: int, batch_size: int, world: int, seed: int) -> None:
        self.size = size
        self.batch_size = batch_size
        self.world = world
        self.seed = seed
        self.global_batch = batch_size * world
        if size < self.global_batch:
            raise DataError(
                f"{size} training images are fewer than one global batch ({self.global_batch})"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch

    def permutation(self, epoch: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator).numpy()

    def batches(
        self, epoch: int, start_step: int, rank: int, permutation: np.ndarray | None = None
    ) -> Iterator[list[tuple[int, int, int]]]:
        """This rank's batches from ``start_step`` on: lists of (index, epoch, position)."""
        perm = self.permutation(epoch) if permutation is None else permutation
        for step in range(start_step, self.steps_per_epoch):
            first = step * self.global_batch + rank * self.batch_size
            yield [(int(perm[p]), epoch, p) for p in range(first, first + self.batch_size)]


class TrainDataset(torch.utils.data.Dataset):
    """Maps (index, epoch, position) to (augmented tensor, label); the augmentation is seeded
    by (seed, epoch, position)."""

    def __init__(self, subset: Subset, augment_config: AugmentConfig, seed: int) -> None:
        self.subset = subset
        self.augment = augment_config
        self.seed = seed

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        index, epoch, position = item
        rng = np.random.default_rng([self.seed, epoch, position])
        image = augment(self.subset.read(index), self.augment, rng)
        return to_tensor(image), int(self.subset.labels[index])


class _ListSampler(torch.utils.data.Sampler):
    def __init__(self, batches: list[list[tuple[int, int, int]]]) -> None:
        self._batches = batches

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def epoch_loader(
    dataset: TrainDataset,
    sampler: EpochSampler,
    epoch: int,
    start_step: int,
    rank: int,
    num_workers: int,
    permutation: np.ndarray | None = None,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over this rank's remaining batches of ``epoch``."""
    batches = list(sampler.batches(epoch, start_step, rank, permutation))
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs = {"persistent_workers": False, "prefetch_factor": 4}
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_ListSampler(batches),
        num_workers=num_workers,
        pin_memory=pin_memory,
        # A private generator: creating a loader must not consume the global torch RNG.
        generator=torch.Generator().manual_seed(sampler.seed + epoch),
        **kwargs,
    )


def draw_pairs(
    labels: np.ndarray, pairs_per_fold: int, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same/different pairs of sample indices over identity-disjoint folds.

    Returns (pairs (M, 2), same (M,), fold (M,)); each fold holds ``pairs_per_fold`` same and
    ``pairs_per_fold`` different pairs built from its own identities only.
    """
    rng = np.random.default_rng(seed)
    identities = rng.permutation(np.unique(labels))
    members = {int(c): np.nonzero(labels == c)[0] for c in identities}
    rows, same, fold_of = [], [], []
    for fold in range(folds):
        group = [int(c) for c in identities[fold::folds]]
        multi = [c for c in group if len(members[c]) >= 2]
        if len(group) < 2 or not multi:
            raise DataError(f"validation fold {fold} needs 2 identities, one with 2 images")
        for _ in range(pairs_per_fold):
            c = multi[int(rng.integers(len(multi)))]
            a, b = rng.choice(members[c], size=2, replace=False)
            rows.append((a, b))
            same.append(True)
            fold_of.append(fold)
        for _ in range(pairs_per_fold):
            ca, cb = rng.choice(group, size=2, replace=False)
            rows.append((rng.choice(members[int(ca)]), rng.choice(members[int(cb)])))
            same.append(False)
            fold_of.append(fold)
    return np.asarray(rows, dtype=np.int64), np.asarray(same), np.asarray(fold_of)
