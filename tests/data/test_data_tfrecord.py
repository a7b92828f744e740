"""TFRecord framing and tf.train.Example parsing without TensorFlow, against independent oracles.

Oracles: a bit-by-bit CRC-32C; the PyPI `tfrecord` package (its own reader and the protobuf
runtime's ``tf.train.Example`` class) reading what our encoder wrote, and our parser reading
what the protobuf runtime serialised.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from format_fixtures import (
    crc32c_reference,
    encode_example,
    frame,
    masked_crc,
    write_tfrecord,
)
from probslot.data.readers import DataFormatError
from probslot.data.readers.tfrecord import crc32c, iter_records, masked_crc32c, parse_example


def test_crc32c_matches_the_bitwise_reference() -> None:
    assert crc32c(b"123456789") == crc32c_reference(b"123456789") == 0xE3069283  # RFC 3720
    data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    assert crc32c(data) == crc32c_reference(data)
    crc = crc32c_reference(data)
    assert masked_crc32c(data) == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % 2**32
    assert masked_crc(data) == masked_crc32c(data)


def _features(rng: np.random.Generator) -> dict:
    image = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    image[0, 0] = 0  # zero bytes are the ones a string join loses
    image[1, 1] = 255
    return {
        "image": ("bytes", image),
        "zeros": ("bytes", np.zeros(11, np.uint8)),
        "x": ("float", rng.normal(size=13).astype(np.float32)),
        "ids": ("int64", np.array([0, 1, -1, 2**40, -(2**62)], np.int64)),
        "png": ("bytes", [b"\x89PNG\r\n\x1a\n\x00\x00rest"]),
        "pair": ("bytes", [b"ab", b"c"]),
    }


def test_parse_example_round_trips_our_encoder() -> None:
    features = _features(np.random.default_rng(1))
    parsed = parse_example(encode_example(features))
    assert set(parsed) == set(features)
    assert parsed["image"].dtype == np.uint8
    np.testing.assert_array_equal(parsed["image"], features["image"][1].ravel())
    np.testing.assert_array_equal(parsed["zeros"], np.zeros(11, np.uint8))
    np.testing.assert_array_equal(parsed["x"], features["x"][1])
    np.testing.assert_array_equal(parsed["ids"], features["ids"][1])
    assert parsed["png"] == features["png"][1]
    assert parsed["pair"] == [b"ab", b"c"]


def test_parse_example_reads_what_protobuf_serialises() -> None:
    """The protobuf runtime's tf.train.Example (via the `tfrecord` package) as the oracle."""
    from tfrecord import example_pb2

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, 300, dtype=np.uint8)
    image[:3] = [0, 255, 0]
    floats = rng.normal(size=4).astype(np.float32)
    ex = example_pb2.Example()
    ex.features.feature["image"].bytes_list.value.extend(bytes([b]) for b in image)
    ex.features.feature["f"].float_list.value.extend(floats.tolist())
    ex.features.feature["i"].int64_list.value.extend([-5, 0, 7])
    ex.features.feature["empty"].bytes_list.value.extend([])
    parsed = parse_example(ex.SerializeToString())
    np.testing.assert_array_equal(parsed["image"], image)
    np.testing.assert_array_equal(parsed["f"], floats)
    np.testing.assert_array_equal(parsed["i"], [-5, 0, 7])
    assert parsed["empty"].size == 0
    # and the runtime parses our encoder's bytes into the same values
    ours = example_pb2.Example.FromString(encode_example({"image": ("bytes", image)}))
    assert b"".join(ours.features.feature["image"].bytes_list.value) == image.tobytes()
    assert len(ours.features.feature["image"].bytes_list.value) == image.size  # one entry each


@pytest.mark.parametrize("compress", [True, False])
def test_iter_records_reads_what_the_tfrecord_package_reads(tmp_path: Path, compress: bool) -> None:
    from tfrecord.reader import tfrecord_loader

    rng = np.random.default_rng(3)
    written = [_features(rng) for _ in range(4)]
    path = write_tfrecord(tmp_path / "f.tfrecords", [encode_example(f) for f in written], compress)
    ours = [parse_example(data) for _, data in iter_records(path)]
    theirs = list(
        tfrecord_loader(
            str(path),
            None,
            {"image": "byte", "x": "float"},
            compression_type="gzip" if compress else None,
        )
    )
    assert len(ours) == len(theirs) == 4
    for o, t, w in zip(ours, theirs, written):
        # the package returns an 'S1' array; .tobytes() keeps the zero bytes
        assert t["image"].tobytes() == o["image"].tobytes() == w["image"][1].tobytes()
        np.testing.assert_array_equal(t["x"], o["x"])


def test_iter_records_start_skips_records(tmp_path: Path) -> None:
    payloads = [encode_example({"i": ("int64", np.array([i]))}) for i in range(6)]
    path = write_tfrecord(tmp_path / "f.tfrecords", payloads)
    got = [(i, int(parse_example(d)["i"][0])) for i, d in iter_records(path, start=4)]
    assert got == [(4, 4), (5, 5)]


def _raw_file(tmp_path: Path, n: int = 3) -> tuple[Path, list[bytes]]:
    payloads = [encode_example({"v": ("bytes", np.full(50, i, np.uint8))}) for i in range(n)]
    return tmp_path / "f.tfrecords", payloads


def test_corrupt_data_crc_names_file_record_and_offset(tmp_path: Path) -> None:
    path, payloads = _raw_file(tmp_path)
    raw = bytearray(b"".join(frame(p) for p in payloads))
    second = len(frame(payloads[0]))
    raw[second + 12 + 5] ^= 0x01  # flip one bit inside record 1's data
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(
        DataFormatError, match=r"f\.tfrecords: record 1: CRC mismatch in the data"
    ) as err:
        list(iter_records(path))
    assert err.value.index == 1 and err.value.file == str(path)
    assert f"at byte {second + 12}" in str(err.value)


def test_corrupt_length_crc(tmp_path: Path) -> None:
    path, payloads = _raw_file(tmp_path)
    raw = bytearray(b"".join(frame(p) for p in payloads))
    raw[8] ^= 0xFF  # the length CRC of record 0
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match=r"record 0: CRC mismatch in the length field"):
        list(iter_records(path))


@pytest.mark.parametrize("cut", [5, 20, -3])
def test_truncated_file_names_record(tmp_path: Path, cut: int) -> None:
    path, payloads = _raw_file(tmp_path)
    raw = b"".join(frame(p) for p in payloads)
    keep = len(frame(payloads[0])) * 2 + (cut if cut > 0 else len(frame(payloads[2])) + cut)
    path.write_bytes(raw[:keep])
    with pytest.raises(DataFormatError, match=r"record 2: the file ends inside .*truncated"):
        list(iter_records(path))


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path, payloads = _raw_file(tmp_path)
    data = gzip.compress(b"".join(frame(p) for p in payloads))
    path.write_bytes(data[: len(data) - 30])
    with pytest.raises(
        DataFormatError, match=r"f\.tfrecords: record \d: the GZIP stream is damaged"
    ):
        list(iter_records(path))


def test_not_an_example(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        parse_example(b"\x0a\x05\x01")  # a field longer than the message
    assert struct.calcsize("<Q") == 8
