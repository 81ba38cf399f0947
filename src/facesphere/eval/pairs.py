"""Verification pair lists: LFW's `pairs.txt` and plain `path_a path_b label [fold]` lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facesphere.errors import DataError
from facesphere.io.files import read_utf8


@dataclass(frozen=True)
class Pair:
    """Two image paths, whether they show the same person, and the pair's fold."""

    path_a: Path
    path_b: Path
    same: bool
    fold: int


class PairsFormatError(DataError):
    """A pairs file that does not follow its protocol."""


def lfw_image_path(images: Path, name: str, number: str) -> Path:
    """`images/Name/Name_0001.jpg` for LFW's (name, number)."""
    return images / name / f"{name}_{int(number):04d}.jpg"


def read_lfw_pairs(pairs_file: str | Path, images: str | Path) -> list[Pair]:
    """Read LFW View 2: a header `folds per_class`, then per fold `per_class` same-person lines
    `name i j` followed by `per_class` different-person lines `name1 i name2 j`."""
    pairs_file, images = Path(pairs_file), Path(images)
    text = read_utf8(pairs_file, "pairs file", PairsFormatError)
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or len(lines[0]) != 2 or not all(v.isdigit() for v in lines[0]):
        raise PairsFormatError(f"{pairs_file}: first line must be '<folds> <pairs per class>'")
    folds, per_class = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if len(body) != folds * per_class * 2:
        raise PairsFormatError(
            f"{pairs_file}: expected {folds * per_class * 2} pair lines, found {len(body)}"
        )
    pairs = []
    for index, fields in enumerate(body):
        fold = index // (2 * per_class)
        if len(fields) == 3:
            name, i, j = fields
            pairs.append(
                Pair(lfw_image_path(images, name, i), lfw_image_path(images, name, j), True, fold)
            )
        elif len(fields) == 4:
            name_a, i, name_b, j = fields
            pairs.append(
                Pair(
                    lfw_image_path(images, name_a, i),
                    lfw_image_path(images, name_b, j),
                    False,
                    fold,
                )
            )
        else:
            raise PairsFormatError(f"{pairs_file}: line {index + 2} has {len(fields)} fields")
    return pairs


def read_pair_list(pairs_file: str | Path, images: str | Path, folds: int = 10) -> list[Pair]:
    """Read lines `path_a path_b label [fold]` (label 1 = same person; paths relative to
    `images`). Without a fold column, `folds` folds are made by position."""
    pairs_file, images = Path(pairs_file), Path(images)
    rows = []
    text = read_utf8(pairs_file, "pairs file", PairsFormatError)
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (3, 4) or fields[2] not in ("0", "1"):
            raise PairsFormatError(
                f"{pairs_file}: line {number} must be 'path_a path_b 0|1 [fold]', got {line!r}"
            )
        fold = None
        if len(fields) == 4:
            if not fields[3].lstrip("-").isdigit():
                raise PairsFormatError(f"{pairs_file}: line {number}: fold must be an integer")
            fold = int(fields[3])
        rows.append((fields[0], fields[1], fields[2] == "1", fold))
    if not rows:
        raise PairsFormatError(f"{pairs_file}: no pairs")
    with_fold = [r[3] is not None for r in rows]
    if any(with_fold) and not all(with_fold):
        raise PairsFormatError(f"{pairs_file}: give a fold on every line or on none")
    return [
        Pair(
            images / a,
            images / b,
            same,
            fold if fold is not None else index * folds // len(rows),
        )
        for index, (a, b, same, fold) in enumerate(rows)
    ]


def sample_pairs(
    root: str | Path, pairs_per_class: int, folds: int = 10, seed: int = 0
) -> list[Pair]:
    """Draw same- and different-person pairs from a folder of identity folders.

    Identities are split into `folds` disjoint groups, and each fold's pairs use only its own
    group, as LFW's View 2 does. Each fold holds `pairs_per_class` same and different pairs.
    """
    import random

    root = Path(root)
    people = {
        d.name: sorted(p for p in d.iterdir() if p.is_file())
        for d in sorted(root.iterdir())
        if d.is_dir()
    }
    people = {name: files for name, files in people.items() if files}
    names = sorted(people)
    if len(names) < 2 * folds:
        raise ValueError(f"{root}: {len(names)} identities are too few for {folds} folds")
    rng = random.Random(seed)
    rng.shuffle(names)
    pairs: list[Pair] = []
    for fold in range(folds):
        group = names[fold::folds]
        multi = [n for n in group if len(people[n]) >= 2]
        if not multi:
            raise ValueError(f"{root}: fold {fold} has no identity with two photos")
        for _ in range(pairs_per_class):
            name = rng.choice(multi)
            a, b = rng.sample(people[name], 2)
            pairs.append(Pair(a, b, True, fold))
        for _ in range(pairs_per_class):
            name_a, name_b = rng.sample(group, 2)
            pairs.append(Pair(rng.choice(people[name_a]), rng.choice(people[name_b]), False, fold))
    return pairs


def first_per_fold(pairs: list[Pair], limit: int) -> list[Pair]:
    """The first `limit // 2` same and `limit // 2` different pairs of each fold."""
    kept: list[Pair] = []
    counts: dict[tuple[int, bool], int] = {}
    for pair in pairs:
        key = (pair.fold, pair.same)
        if counts.get(key, 0) < limit // 2:
            counts[key] = counts.get(key, 0) + 1
            kept.append(pair)
    return kept
