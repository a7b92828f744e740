"""TFRecord files and ``tf.train.Example`` protobufs, read without TensorFlow.

**Framing** (TensorFlow's ``tensorflow/core/lib/io/record_writer.cc``), one record after another,
the whole file optionally GZIP-compressed (DeepMind's multi-object datasets are)::

    uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

with ``masked_crc32c(b) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2**32)``, ``c`` = CRC-32C
(Castagnoli) of ``b``. Both CRCs are checked; a mismatch, a file that ends inside a record and a
damaged GZIP stream raise `DataFormatError` naming the file, the record and the byte offset.

**Example** (``tensorflow/core/example/{example,feature}.proto``)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   // entries: { string key = 1; Feature value = 2; }
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

`parse_example` decodes exactly this (unknown fields are skipped by wire type). A BytesList
whose entries are all one byte long — how DeepMind stores images and masks, one entry per
pixel and channel, zero bytes included — comes back as one uint8 array, read with a strided view
of the wire bytes (each entry is ``0x0A 0x01 byte``): no Python object per pixel, no lost zeros.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from probslot.data.readers.base import DataFormatError

try:  # the `crc32c` package (a dependency of `tfrecord`): CRC-32C in C, ~10 GB/s
    from crc32c import crc32c as _crc32c
except ImportError:  # pragma: no cover - exercised only without the package
    _crc32c = None

__all__ = ["Feature", "crc32c", "iter_records", "masked_crc32c", "parse_example"]

#: a parsed feature: uint8 array (BytesList of 1-byte entries), list[bytes] (other BytesLists),
#: float32 array (FloatList) or int64 array (Int64List)
Feature = np.ndarray | list

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


def _crc32c_python(data: bytes | memoryview) -> int:  # pragma: no cover - fallback
    table = _TABLE
    crc = _U32
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


_TABLE = _crc32c_table()


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C (Castagnoli) of `data`; ``crc32c(b"123456789") == 0xE3069283``."""
    return _crc32c(data) if _crc32c is not None else _crc32c_python(data)


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC-32C of `data`."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


# --------------------------------------------------------------------------- framing
def _open(path: Path):
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    raw.seek(0)
    return raw, raw


def iter_records(
    path: str | os.PathLike[str], start: int = 0, check_crc: bool = True
) -> Iterator[tuple[int, memoryview]]:
    """Yield ``(index, data)`` for every record of a TFRecord file (GZIP or not) from `start` on.

    Records before `start` are read but neither CRC-checked nor returned (resuming a conversion
    re-reads the stream: GZIP cannot seek). `data` is valid until the next record is read.

    Raises:
        DataFormatError: a CRC mismatch, a record cut short, a damaged GZIP stream.
    """
    path = Path(path)
    if path.stat().st_size == 0:  # a failed download, not a dataset with no scenes
        raise DataFormatError(path, "the file is empty (0 bytes): download it again", 0)
    stream, raw = _open(path)
    index, offset = 0, 0
    try:
        while True:
            try:
                header = stream.read(12)
                if not header:
                    return
                if len(header) < 12:
                    raise DataFormatError(
                        path,
                        f"the file ends inside a record header at byte {offset} (read "
                        f"{len(header)} of 12 bytes): it is truncated; download it again",
                        index,
                    )
                (length,) = struct.unpack_from("<Q", header)
                (length_crc,) = struct.unpack_from("<I", header, 8)
                if check_crc and masked_crc32c(header[:8]) != length_crc:
                    raise DataFormatError(
                        path,
                        f"CRC mismatch in the length field at byte {offset} (stored "
                        f"0x{length_crc:08x}, computed 0x{masked_crc32c(header[:8]):08x}): the "
                        "file is corrupt or not a TFRecord file",
                        index,
                    )
                body = stream.read(length + 4)
            except (EOFError, OSError, zlib.error) as err:
                raise DataFormatError(
                    path,
                    f"the GZIP stream is damaged or cut short after byte {offset} of the "
                    f"decompressed data ({err}); download the file again",
                    index,
                ) from None
            if len(body) < length + 4:
                raise DataFormatError(
                    path,
                    f"the file ends inside the record at byte {offset} (expected {length} data "
                    f"bytes + 4 CRC bytes, got {len(body)}): it is truncated; download it again",
                    index,
                )
            data = memoryview(body)[:length]
            if index >= start:
                if check_crc:
                    (stored,) = struct.unpack_from("<I", body, length)
                    computed = masked_crc32c(data)
                    if computed != stored:
                        raise DataFormatError(
                            path,
                            f"CRC mismatch in the data at byte {offset + 12} (stored "
                            f"0x{stored:08x}, computed 0x{computed:08x}): the record is corrupt; "
                            "download the file again",
                            index,
                        )
                yield index, data
            offset += 16 + length
            index += 1
    finally:
        stream.close()
        raw.close()


# --------------------------------------------------------------------------- protobuf
def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("malformed varint")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end or the varint itself) of one message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:  # length-delimited
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("a length-delimited field runs past its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value, pos
        elif wire == 5:
            yield number, wire, pos, pos + 4
            pos += 4
        elif wire == 1:
            yield number, wire, pos, pos + 8
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("a field runs past its message")


def _bytes_list(buf: memoryview, start: int, end: int) -> Feature:
    size = end - start
    if size and size % 3 == 0:
        wire = np.frombuffer(buf, dtype=np.uint8, count=size, offset=start)
        if (wire[0::3] == 0x0A).all() and (wire[1::3] == 0x01).all():
            return wire[2::3].copy()  # every entry is one byte: tag 0x0A, length 1, the byte
    values = [bytes(buf[s:e]) for number, wire, s, e in _fields(buf, start, end) if number == 1]
    if all(len(v) == 1 for v in values):
        return np.frombuffer(b"".join(values), dtype=np.uint8).copy()
    return values


def _float_list(buf: memoryview, start: int, end: int) -> np.ndarray:
    parts = []
    for number, wire, s, e in _fields(buf, start, end):
        if number != 1:
            continue
        if wire == 2:  # packed
            if (e - s) % 4:
                raise ValueError("a packed FloatList whose length is not a multiple of 4")
            parts.append(np.frombuffer(buf, dtype="<f4", count=(e - s) // 4, offset=s))
        elif wire == 5:
            parts.append(np.frombuffer(buf, dtype="<f4", count=1, offset=s))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def _int64_list(buf: memoryview, start: int, end: int) -> np.ndarray:
    values: list[int] = []
    for number, wire, s, e in _fields(buf, start, end):
        if number != 1:
            continue
        if wire == 2:  # packed varints
            pos = s
            while pos < e:
                value, pos = _varint(buf, pos)
                values.append(value)
        elif wire == 0:
            values.append(s)  # for varints `_fields` yields the value itself
    out = np.array(values, dtype=np.uint64).view(np.int64)  # two's complement
    return out


def parse_example(data: bytes | memoryview) -> dict[str, Feature]:
    """The features of one serialised ``tf.train.Example``: name → `Feature`.

    Raises:
        ValueError: the bytes are not a well-formed Example.
    """
    buf = memoryview(data)
    out: dict[str, Feature] = {}
    for number, wire, s, e in _fields(buf, 0, len(buf)):
        if number != 1 or wire != 2:
            continue
        for n2, w2, s2, e2 in _fields(buf, s, e):  # Features: map entries
            if n2 != 1 or w2 != 2:
                continue
            key, value = None, None
            for n3, w3, s3, e3 in _fields(buf, s2, e2):
                if n3 == 1 and w3 == 2:
                    key = bytes(buf[s3:e3]).decode("utf-8")
                elif n3 == 2 and w3 == 2:
                    value = (s3, e3)
            if key is None:
                raise ValueError("a feature map entry without a key")
            if value is None:
                out[key] = np.zeros(0, np.float32)
                continue
            kind = None
            for n4, w4, s4, e4 in _fields(buf, *value):
                if w4 != 2:
                    continue
                if n4 == 1:
                    kind = _bytes_list(buf, s4, e4)
                elif n4 == 2:
                    kind = _float_list(buf, s4, e4)
                elif n4 == 3:
                    kind = _int64_list(buf, s4, e4)
            out[key] = kind if kind is not None else np.zeros(0, np.float32)
    return out
