"""insightface / MXNet RecordIO face datasets (``train.rec`` + ``train.idx``), without MXNet.

Layout of a ``.rec`` file: a sequence of records, each

* uint32 magic ``0xced7230a``;
* uint32 ``(cflag << 29) | length``: ``cflag`` 0 for a whole record, 1/2/3 for the first,
  middle and last part of a record that was split (the parts are joined with the magic in
  between: MXNet splits where the payload itself contains the magic);
* ``length`` payload bytes, zero-padded to a multiple of 4.

A payload starts with an IRHeader ``<IfQQ`` (flag, label, id, id2).  When ``flag > 0`` the
label is a vector of ``flag`` float32 values following the header (and the scalar is 0).  The
rest of the payload is the encoded image.  The ``.idx`` file holds ``key<TAB>offset`` lines.

insightface's face datasets keep a header at key 0 whose label vector is ``[first, end)``:
images are keys ``1 .. first-1`` (scalar label = identity) and keys ``first .. end-1`` are one
record per identity whose label vector is the ``[start, stop)`` range of its image keys.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from facesphere.errors import DataError

MAGIC = 0xCED7230A
_HEADER = struct.Struct("<IfQQ")
_WORD = struct.Struct("<I")
_LENGTH_MASK = (1 << 29) - 1


class RecordIOError(DataError):
    """A malformed RecordIO file."""


@dataclass(frozen=True)
class IRHeader:
    """The per-record header: ``label`` is a float or a tuple of floats (when flag > 0)."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


def pack(header: IRHeader, payload: bytes) -> bytes:
    """Serialise an IRHeader (with its label vector when the label is a sequence) + payload."""
    if isinstance(header.label, (tuple, list)):
        vector = np.asarray(header.label, dtype="<f4")
        head = _HEADER.pack(len(vector), 0.0, header.id, header.id2)
        return head + vector.tobytes() + payload
    return _HEADER.pack(0, float(header.label), header.id, header.id2) + payload


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """Split a record payload into its IRHeader and the remaining bytes."""
    if len(record) < _HEADER.size:
        raise RecordIOError(f"record of {len(record)} bytes is shorter than an IRHeader")
    flag, label, id_, id2 = _HEADER.unpack_from(record)
    rest = record[_HEADER.size :]
    if flag > 0:
        size = 4 * flag
        if len(rest) < size:
            raise RecordIOError(f"record declares {flag} labels but is too short")
        vector = tuple(float(v) for v in np.frombuffer(rest[:size], dtype="<f4"))
        return IRHeader(flag, vector, id_, id2), rest[size:]
    return IRHeader(flag, float(label), id_, id2), rest


def read_record_at(handle: BinaryIO, offset: int) -> bytes:
    """Read the (possibly split) record starting at byte ``offset``."""
    handle.seek(offset)
    parts: list[bytes] = []
    while True:
        head = handle.read(8)
        if len(head) < 8:
            raise RecordIOError(f"truncated record header at offset {handle.tell() - len(head)}")
        magic, word = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordIOError(f"bad magic 0x{magic:08x} at offset {handle.tell() - 8}")
        cflag, length = word >> 29, word & _LENGTH_MASK
        data = handle.read(length)
        if len(data) < length:
            raise RecordIOError("truncated record payload")
        handle.read((-length) % 4)
        parts.append(data)
        if cflag in (0, 3):
            break
        if cflag not in (1, 2):
            raise RecordIOError(f"invalid cflag {cflag}")
    return _WORD.pack(MAGIC).join(parts)


def read_index(path: str | Path) -> dict[int, int]:
    """Parse an ``.idx`` file into {key: byte offset}."""
    index: dict[int, int] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise RecordIOError(f"{path}: line {number} is not 'key offset'")
        index[int(fields[0])] = int(fields[1])
    return index


class RecordWriter:
    """Writes an indexed RecordIO pair (``.rec`` + ``.idx``); use as a context manager."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self._rec = open(self.rec_path, "wb")  # noqa: SIM115
        self._idx = open(self.idx_path, "w")  # noqa: SIM115

    def write(self, key: int, payload: bytes) -> None:
        """Append one whole record (cflag 0) under ``key``."""
        if len(payload) > _LENGTH_MASK:
            raise RecordIOError("record too large")
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(struct.pack("<II", MAGIC, len(payload)))
        self._rec.write(payload)
        self._rec.write(b"\0" * ((-len(payload)) % 4))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_face_recordio(
    rec_path: str | Path, images: Sequence[bytes], labels: Sequence[int]
) -> None:
    """Write encoded images with integer identity labels in insightface's layout.

    Images are stored grouped by label (sorted), followed by one range record per identity;
    a ``property`` file (``classes,112,112``) is written beside the ``.rec``.
    """
    order = sorted(range(len(images)), key=lambda i: labels[i])
    classes = sorted(set(int(v) for v in labels))
    first = len(images) + 1
    ranges: dict[int, list[int]] = {}
    with RecordWriter(rec_path) as writer:
        writer.write(0, pack(IRHeader(2, (float(first), float(first + len(classes))), 0, 0), b""))
        for key, i in enumerate(order, start=1):
            label = int(labels[i])
            ranges.setdefault(label, [key, key])[1] = key + 1
            writer.write(key, pack(IRHeader(0, float(label), key, 0), images[i]))
        for key, label in enumerate(classes, start=first):
            start, stop = ranges[label]
            writer.write(key, pack(IRHeader(2, (float(start), float(stop)), key, 0), b""))
    Path(rec_path).with_name("property").write_text(f"{len(classes)},112,112\n")


class RecordIOFaces:
    """Random access to the images and labels of an insightface face ``.rec`` file.

    Labels are the scalar labels of the image records; when header 0 is missing (a plain
    im2rec file) every key of the index is an image.  The file is opened lazily per process.
    """

    def __init__(self, rec_path: str | Path) -> None:
        self.rec_path = Path(rec_path)
        idx_path = self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file() or not idx_path.is_file():
            raise RecordIOError(f"need {self.rec_path} and {idx_path}")
        self.offsets = read_index(idx_path)
        self._handle: BinaryIO | None = None
        header, _ = unpack(self.read_raw(0)) if 0 in self.offsets else (None, b"")
        if header is not None and header.flag > 0 and isinstance(header.label, tuple):
            self.keys = list(range(1, int(header.label[0])))
        else:
            self.keys = sorted(self.offsets)
        self.labels = np.asarray([self._label(key) for key in self.keys], dtype=np.int64)

    def _label(self, key: int) -> int:
        """The identity label of record ``key``, reading only its header."""
        self.read_raw(key, header_only=True)
        assert self._handle is not None
        raw = self._handle.read(_HEADER.size + 4)
        flag, label, _, _ = _HEADER.unpack_from(raw)
        if flag > 0:
            label = struct.unpack_from("<f", raw, _HEADER.size)[0]
        return int(label)

    def read_raw(self, key: int, header_only: bool = False) -> bytes:
        """The payload of record ``key`` (with ``header_only``, just seek past the word)."""
        if self._handle is None:
            self._handle = open(self.rec_path, "rb")  # noqa: SIM115
        try:
            offset = self.offsets[key]
        except KeyError:
            raise RecordIOError(f"{self.rec_path}: no record with key {key}") from None
        if header_only:
            self._handle.seek(offset + 8)
            return b""
        return read_record_at(self._handle, offset)

    def __len__(self) -> int:
        return len(self.keys)

    def image_bytes(self, i: int) -> bytes:
        """The encoded image of the i-th image record."""
        return unpack(self.read_raw(self.keys[i]))[1]

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_handle"] = None
        return state


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB uint8 image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
