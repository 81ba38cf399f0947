"""Training data formats: RecordIO, packed shards, prepare, split and augmentation."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from facesphere.train.config import AugmentConfig, DataConfig
from facesphere.train.data import EpochSampler, RecordIOSource, ShardSource, split_identities
from facesphere.train.recordio import (
    MAGIC,
    IRHeader,
    RecordIOError,
    RecordIOFaces,
    pack,
    read_index,
    read_record_at,
    unpack,
    write_face_recordio,
)
from facesphere.train.shards import ShardReader, write_shards


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8).repeat(28, 0).repeat(28, 1)
        for _ in range(n)
    ]


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_recordio_round_trip(tmp_path: Path) -> None:
    images = _images(7)
    labels = [2, 0, 1, 0, 2, 2, 1]
    rec = tmp_path / "train.rec"
    write_face_recordio(rec, [_png(i) for i in images], labels)
    assert (tmp_path / "property").read_text().startswith("3,112,112")
    index = read_index(tmp_path / "train.idx")
    assert sorted(index) == list(range(0, 1 + 7 + 3))
    with open(rec, "rb") as handle:
        header, rest = unpack(read_record_at(handle, index[0]))
        assert header.flag == 2 and header.label == (8.0, 11.0) and rest == b""
        # identity records hold the [start, stop) range of their image keys
        ranges = [unpack(read_record_at(handle, index[k]))[0].label for k in (8, 9, 10)]
    assert ranges == [(1.0, 3.0), (3.0, 5.0), (5.0, 8.0)]
    faces = RecordIOFaces(rec)
    assert len(faces) == 7
    assert faces.labels.tolist() == sorted(labels)
    source = RecordIOSource(tmp_path)
    order = sorted(range(7), key=lambda i: labels[i])
    for position, original in enumerate(order):
        assert np.array_equal(source.read(position), images[original])
    # raw bytes of the file: magic, then (cflag=0, length)
    raw = rec.read_bytes()
    magic, word = struct.unpack_from("<II", raw)
    assert magic == MAGIC and word >> 29 == 0


def test_recordio_split_records_and_errors(tmp_path: Path) -> None:
    payload = pack(IRHeader(0, 5.0, 1, 0), b"abcd" + struct.pack("<I", MAGIC) + b"efgh")
    cut = payload.index(struct.pack("<I", MAGIC))
    first, second = payload[:cut], payload[cut + 4 :]
    path = tmp_path / "split.rec"
    with open(path, "wb") as handle:
        for cflag, part in ((1, first), (3, second)):
            handle.write(struct.pack("<II", MAGIC, (cflag << 29) | len(part)))
            handle.write(part + b"\0" * ((-len(part)) % 4))
    with open(path, "rb") as handle:
        header, body = unpack(read_record_at(handle, 0))
    assert header.label == 5.0
    assert body == b"abcd" + struct.pack("<I", MAGIC) + b"efgh"
    path.write_bytes(b"\0" * 16)
    with open(path, "rb") as handle, pytest.raises(RecordIOError, match="bad magic"):
        read_record_at(handle, 0)


def test_shards_round_trip_and_pickling(tmp_path: Path) -> None:
    import pickle

    images = _images(9, seed=1)
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    manifest = write_shards(
        tmp_path, [_png(i) for i in images], labels, ["a", "b", "c"], per_shard=4
    )
    assert len(manifest["shards"]) == 3
    stored = json.loads((tmp_path / "manifest.json").read_text())
    assert stored["counts"]["images"] == 9 and stored["template"] == "standard112"
    reader = ShardReader(tmp_path)
    assert reader.labels.tolist() == labels
    assert reader.paths() == [str(i) for i in range(9)]
    source = pickle.loads(pickle.dumps(ShardSource(tmp_path)))
    for i, image in enumerate(images):
        assert np.array_equal(source.read(i), image)


def test_split_by_identity_remaps_labels(tmp_path: Path) -> None:
    labels = [i // 3 for i in range(30)]  # 10 identities x 3 images
    write_shards(tmp_path, [_png(i) for i in _images(30)], labels, [f"p{i}" for i in range(10)])
    source = ShardSource(tmp_path)
    config = DataConfig(kind="shards", source=str(tmp_path), val_identities=4, max_identities=5)
    train, val = split_identities(source, config, seed=0)
    assert val is not None
    assert train.num_classes == 5 and val.num_classes == 4
    assert not set(train.identities) & set(val.identities)
    assert sorted(set(train.labels.tolist())) == list(range(5))
    for i in range(len(train)):  # labels follow the images
        original = source.labels[train.indices[i]]
        assert train.identities[train.labels[i]] == source.identities[original]


def test_sampler_ranks_partition_global_batch() -> None:
    sampler = EpochSampler(size=50, batch_size=4, world=2, seed=1)
    assert sampler.steps_per_epoch == 6
    single = EpochSampler(size=50, batch_size=8, world=1, seed=1)
    r0 = list(sampler.batches(0, 0, 0))
    r1 = list(sampler.batches(0, 0, 1))
    whole = list(single.batches(0, 0, 0))
    for a, b, c in zip(r0, r1, whole):
        assert [x[0] for x in a + b] == [x[0] for x in c]
    assert list(single.batches(0, 4, 0)) == whole[4:]
    assert not np.array_equal(single.permutation(0), single.permutation(1))


def test_augment_is_seeded_and_keeps_shape() -> None:
    from facesphere.train.augment import augment

    image = _images(1)[0]
    config = AugmentConfig(
        flip=True, color_jitter=1.0, random_crop=1.0, blur=1.0, low_res=1.0, grayscale=0.0
    )
    a = augment(image, config, np.random.default_rng([1, 2, 3]))
    b = augment(image, config, np.random.default_rng([1, 2, 3]))
    c = augment(image, config, np.random.default_rng([1, 2, 4]))
    assert a.shape == image.shape and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    grey = augment(image, AugmentConfig(flip=False, grayscale=1.0), np.random.default_rng(0))
    assert np.allclose(grey[..., 0], grey[..., 1]) and np.allclose(grey[..., 1], grey[..., 2])
    plain = augment(image, AugmentConfig(flip=False), np.random.default_rng(0))
    assert np.array_equal(plain, image.astype(np.float32))


def test_one_alignment_function_converts_dlib5_or_refuses() -> None:
    from facesphere.align.templates import (
        DLIB_150,
        STANDARD_112,
        align_face,
        align_to_template,
        dlib5_to_standard5,
    )

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(200, 200, 3), dtype=np.uint8)
    dlib5 = np.array([[130, 80], [112, 82], [70, 80], [88, 82], [100, 120]], np.float64)
    chip = align_to_template(image, dlib5, "dlib5", STANDARD_112)
    np.testing.assert_array_equal(chip, align_face(image, dlib5_to_standard5(dlib5), STANDARD_112))
    same = align_to_template(image, dlib5, "dlib5", DLIB_150)
    np.testing.assert_array_equal(same, align_face(image, dlib5, DLIB_150))
    assert same.shape == (150, 150, 3) and chip.shape == (112, 112, 3)
    with pytest.raises(ValueError, match="standard5 landmarks to dlib150"):
        align_to_template(image, dlib5, "standard5", DLIB_150)
    with pytest.raises(ValueError, match="None landmarks"):
        align_to_template(image, dlib5, None, STANDARD_112)


def test_prepare_aligns_and_resumes(tmp_path: Path, shared_data: Path) -> None:
    from facesphere.train.prepare import prepare

    src = tmp_path / "src"
    people = sorted((shared_data / "celeba299").iterdir())[:2]
    for person in people:
        (src / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:2]:
            (src / person.name / photo.name).symlink_to(photo)
    (src / "empty_scene").mkdir()
    Image = __import__("PIL.Image", fromlist=["Image"])
    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(src / "empty_scene" / "x.png")
    out = tmp_path / "out"
    # Only the first identity, then resume with all of them: the first shard is kept.
    first = prepare(src, out, shard_bytes=1, progress=False, limit_identities=1)
    assert first["counts"]["identities"] == 1
    with pytest.raises(ValueError, match="different identity list"):
        prepare(src, out, shard_bytes=1, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["identities"] = sorted(p.name for p in src.iterdir())
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = (out / "shard-00000.bin").stat().st_mtime_ns
    full = prepare(src, out, shard_bytes=1, progress=False)
    assert (out / "shard-00000.bin").stat().st_mtime_ns == before
    assert full["complete"] and full["counts"]["shards"] == 3
    assert "empty_scene/x.png" in (out / "no_face.txt").read_text()
    reader = ShardReader(out)
    assert full["counts"]["images"] == len(reader) >= 3
    source = ShardSource(out)
    crop = source.read(0)
    assert crop.shape == (112, 112, 3)
    # The aligned crop has the face in the middle: more contrast there than at the border.
    assert crop[40:90, 30:80].std() > 10
