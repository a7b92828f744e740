"""Readers of the published multi-object datasets, without TensorFlow (``docs/data.md``).

`READERS` maps a format name (``probslot data convert --format NAME``) to its reader class;
each reader yields `Record`s of the dataset contract as uint8 (`probslot.data.readers.base`).
Add a format by registering a `Reader` subclass with ``@READERS.register("name")`` in a module
of its own and importing that module here (one line).
"""

from __future__ import annotations

from probslot.data.readers import arrays, clevr, deepmind, ocl_h5  # noqa: F401  (register)
from probslot.data.readers.base import READERS, DataFormatError, Reader, Record

__all__ = ["READERS", "DataFormatError", "Reader", "Record"]
