"""A reader of TensorFlow's V2 checkpoints ("tensor bundles"), without TensorFlow.

The original Wave-U-Net published its trained weights as TensorFlow checkpoints:
``PREFIX.index`` and ``PREFIX.data-00000-of-00001``. Reading six numbers per
variable does not justify a 600 MB dependency (whose wheels also lag behind
Python and numpy), so this module reads the format itself with numpy:

* ``PREFIX.index`` is an SSTable in LevelDB's layout (TensorFlow's
  ``core/lib/io/table``): a 48-byte footer (two block handles and a magic
  number) points at an index block, whose entries point at data blocks. A block
  is a run of prefix-compressed ``(key, value)`` entries followed by a restart
  array, then a 5-byte trailer: the compression type (TensorFlow's bundle
  writer does not compress) and the masked CRC32C of contents + type.
* The key ``""`` holds a ``BundleHeaderProto`` (shard count, endianness); every
  other key is a tensor's name, whose value is a ``BundleEntryProto``: dtype,
  shape, shard, byte offset and size in the data file, and the masked CRC32C of
  the tensor's bytes. The few protobuf fields needed are decoded by hand from
  the wire format (varints and length-delimited fields); the generated message
  classes live only inside TensorFlow.
* ``PREFIX.data-SSSSS-of-NNNNN`` holds the raw little-endian tensors.

Every block and every tensor read is checked against its CRC32C. CRC32C
(Castagnoli) is computed here too, rather than through a compiled package, to
keep the install unchanged: :func:`crc32c` runs the byte-wise table algorithm
on many slices of the data at once with numpy, then joins the slices' CRCs
with the linear "shift by n zero bytes" operator (measured here: 0.8 s for the
41 MB of a 10-million-parameter model, on one core).

Errors are one line naming the file and what is wrong (:class:`TFCheckpointError`).
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError


class TFCheckpointError(CheckpointError):
    """A TensorFlow checkpoint is missing, malformed, corrupt or of an unsupported kind."""


# --------------------------------------------------------------------------------------------
# CRC32C
# --------------------------------------------------------------------------------------------

_POLY = 0x82F63B78  # Castagnoli polynomial, bit-reflected
_MASK_DELTA = 0xA282EAD8  # TensorFlow's (and LevelDB's) CRC mask constant


def _make_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _crc_register_bytewise(data: bytes, register: int = 0) -> int:
    """The CRC register after ``data`` (no initial or final inversion); for short inputs."""
    table = _TABLE_LIST
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _zeros_operator(num_bytes: int) -> list[list[int]]:
    """Tables T[j][v] with register -> register after ``num_bytes`` zero bytes = XOR_j T[j][byte_j].

    Feeding zeros is linear in the register, so it is fixed by the images of the
    32 single-bit registers, computed together.
    """
    register = np.uint32(1) << np.arange(32, dtype=np.uint32)
    for _ in range(num_bytes):
        register = _TABLE[register & 0xFF] ^ (register >> 8)
    tables = []
    for j in range(4):
        t = np.zeros(256, dtype=np.uint32)
        values = np.arange(256)
        for bit in range(8):
            t ^= np.where(values >> bit & 1, register[8 * j + bit], 0).astype(np.uint32)
        tables.append([int(v) for v in t])
    return tables


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """CRC32C (Castagnoli, as in iSCSI and TensorFlow) of ``data``."""
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = buf.size
    if n < 4096:
        return _crc_register_bytewise(buf.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    # The initial register 0xFFFFFFFF equals inverting the first four bytes and
    # starting from 0; leading zero bytes leave a zero register unchanged, so the
    # data can be padded in front to a (lanes x slice) rectangle.
    slice_bytes = max(64, math.isqrt(n))
    lanes = -(-n // slice_bytes)
    padded = np.zeros(lanes * slice_bytes, dtype=np.uint8)
    padded[-n:] = buf
    padded[-n:-n + 4] ^= 0xFF
    columns = np.ascontiguousarray(padded.reshape(lanes, slice_bytes).T).astype(np.uint32)
    register = np.zeros(lanes, dtype=np.uint32)
    for column in columns:  # every lane's register, one byte position at a time
        register = _TABLE[(register ^ column) & 0xFF] ^ (register >> 8)
    shift = _zeros_operator(slice_bytes)
    crc = 0
    for lane_register in register.tolist():
        crc = (shift[0][crc & 0xFF] ^ shift[1][crc >> 8 & 0xFF] ^ shift[2][crc >> 16 & 0xFF]
               ^ shift[3][crc >> 24]) ^ lane_register
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """TensorFlow's stored form of a CRC: rotated right by 15 bits plus a constant."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rotated = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# Varints and protobuf wire format
# --------------------------------------------------------------------------------------------


class _Malformed(Exception):
    """Internal: the bytes do not parse; turned into a TFCheckpointError naming the file."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varint/fixed fields, bytes for length-delimited."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Malformed("truncated fixed64")
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Malformed("truncated field")
            value, pos = bytes(buf[pos:pos + length]), pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Malformed("truncated fixed32")
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise _Malformed(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


# --------------------------------------------------------------------------------------------
# The SSTable (.index)
# --------------------------------------------------------------------------------------------

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_BYTES = 48
_BLOCK_TRAILER_BYTES = 5
_COMPRESSION = {0: None, 1: "snappy", 2: "zlib"}


def _block_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _read_block(table: bytes, handle: tuple[int, int]) -> bytes:
    offset, size = handle
    end = offset + size
    if end + _BLOCK_TRAILER_BYTES > len(table):
        raise _Malformed(f"block at byte {offset} runs past the end of the file")
    contents = table[offset:end]
    kind = table[end]
    (stored,) = struct.unpack_from("<I", table, end + 1)
    if unmask_crc(stored) != crc32c(table[offset:end + 1]):
        raise _Malformed(f"CRC32C mismatch in the block at byte {offset} (corrupt file)")
    if kind != 0:
        name = _COMPRESSION.get(kind, f"type {kind}")
        raise _Malformed(f"a block is compressed ({name}); only uncompressed tables are read "
                         "(TensorFlow writes checkpoints uncompressed)")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Malformed("block too short")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 * (restarts + 1)
    if end < 0:
        raise _Malformed("bad restart array")
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_bytes, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_bytes > end:
            raise _Malformed("bad block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_bytes]))
        pos += value_bytes
    return entries


def read_table(table: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an uncompressed LevelDB-layout table, in key order."""
    if len(table) < _FOOTER_BYTES:
        raise _Malformed(f"{len(table)} bytes is too short for a table footer")
    footer = table[-_FOOTER_BYTES:]
    (magic,) = struct.unpack_from("<Q", footer, _FOOTER_BYTES - 8)
    if magic != _TABLE_MAGIC:
        raise _Malformed("no table magic number at its end")
    _, pos = _block_handle(footer, 0)  # the metaindex block: empty in TensorFlow's bundles
    index_handle, _ = _block_handle(footer, pos)
    entries = []
    for _, handle_bytes in _block_entries(_read_block(table, index_handle)):
        handle, _ = _block_handle(handle_bytes, 0)
        entries.extend(_block_entries(_read_block(table, handle)))
    return entries


# --------------------------------------------------------------------------------------------
# Bundle entries
# --------------------------------------------------------------------------------------------

# TensorFlow's DataType enum (types.proto) -> numpy, for the types checkpoints of numbers use.
_DTYPES = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    8: np.complex64, 9: np.int64, 10: np.bool_, 17: np.uint16, 18: np.complex128,
    19: np.float16, 22: np.uint32, 23: np.uint64,
}
_DTYPE_NAMES = {7: "string", 14: "bfloat16", 20: "resource", 21: "variant"}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives in the data files, and what it is."""

    name: str
    dtype: np.dtype | None  # None: a type this reader does not decode (strings, bfloat16)
    dtype_name: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size_bytes: int
    crc32c: int  # unmasked


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, value in _proto_fields(buf):
        if number == 2:
            size = 0
            for dim_number, dim_value in _proto_fields(value):
                if dim_number == 1:
                    size = _signed64(dim_value)
            dims.append(size)
        elif number == 3 and value:
            raise _Malformed("a tensor of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    values = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0, "crc": 0}
    for number, value in _proto_fields(buf):
        if number == 1:
            values["dtype"] = value
        elif number == 2:
            values["shape"] = _parse_shape(value)
        elif number == 3:
            values["shard"] = value
        elif number == 4:
            values["offset"] = _signed64(value)
        elif number == 5:
            values["size"] = _signed64(value)
        elif number == 6:
            values["crc"] = value
        elif number == 7:
            raise _Malformed(f"'{name}' is stored in slices (a partitioned variable), "
                             "which this reader does not join")
    code = values["dtype"]
    dtype = _DTYPES.get(code)
    return TensorEntry(
        name=name,
        dtype=None if dtype is None else np.dtype(dtype).newbyteorder("<"),
        dtype_name=np.dtype(dtype).name if dtype else _DTYPE_NAMES.get(code, f"type {code}"),
        shape=values["shape"],
        shard=values["shard"],
        offset=values["offset"],
        size_bytes=values["size"],
        crc32c=unmask_crc(values["crc"]),
    )


# --------------------------------------------------------------------------------------------
# The checkpoint
# --------------------------------------------------------------------------------------------

_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def resolve_prefix(path: str | os.PathLike) -> Path:
    """The checkpoint prefix meant by ``path``: the prefix itself, its ``.index``,
    ``.data-*`` or ``.meta`` file, or a folder holding one checkpoint (or a
    ``checkpoint`` state file naming the latest)."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            text = state.read_text(errors="replace")
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"', text, re.MULTILINE)
            if match:
                # Written where the checkpoint was saved: an absolute path from another
                # machine means the file of that name in this folder.
                named = Path(match.group(1))
                named = named if named.is_absolute() else path / named
                if not Path(f"{named}.index").is_file():
                    named = path / named.name
                return named
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            found = ", ".join(p.name for p in indexes) or "none"
            raise TFCheckpointError(f"{path}: a folder with {len(indexes)} TensorFlow checkpoint "
                                    f"index files ({found}); name the checkpoint prefix")
        return indexes[0].with_suffix("")
    name = path.name
    if name.endswith(".index") or name.endswith(".meta"):
        return path.with_name(name.rsplit(".", 1)[0])
    if _DATA_SUFFIX.search(name):
        return path.with_name(_DATA_SUFFIX.sub("", name))
    return path


class TFCheckpoint:
    """A TensorFlow V2 checkpoint opened for reading: its entries, and each tensor on demand."""

    def __init__(self, path: str | os.PathLike):
        self.prefix = resolve_prefix(path)
        self.index_path = Path(f"{self.prefix}.index")
        if not self.index_path.is_file():
            raise TFCheckpointError(
                f"{path}: no TensorFlow checkpoint there (expected {self.index_path.name} and "
                f"{self.prefix.name}.data-00000-of-00001 in {self.index_path.parent})"
            )
        try:
            table = read_table(self.index_path.read_bytes())
            self.num_shards, self.entries = self._parse(table)
        except _Malformed as exc:
            raise TFCheckpointError(
                f"{self.index_path}: not a readable TensorFlow checkpoint index ({exc})"
            ) from None

    @staticmethod
    def _parse(table: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, TensorEntry]]:
        if not table or table[0][0] != b"":
            raise _Malformed("no bundle header (the empty key)")
        num_shards = 1
        for number, value in _proto_fields(table[0][1]):
            if number == 1:
                num_shards = value
            elif number == 2 and value != 0:
                raise _Malformed("big-endian tensors")
        entries = {}
        for key, value in table[1:]:
            name = key.decode("utf-8", errors="replace")
            entry = _parse_entry(name, value)
            if not 0 <= entry.shard < num_shards:
                raise _Malformed(f"'{name}' is in shard {entry.shard} of {num_shards}")
            entries[name] = entry
        return num_shards, entries

    @property
    def name(self) -> str:
        return self.prefix.name

    def names(self) -> list[str]:
        return list(self.entries)

    def data_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name``, checked against its size and CRC32C."""
        entry = self.entries.get(name)
        if entry is None:
            raise TFCheckpointError(f"{self.index_path}: no variable '{name}'")
        if entry.dtype is None:
            raise TFCheckpointError(f"{self.index_path}: '{name}' holds {entry.dtype_name} values, "
                                    "which this reader does not decode")
        expected = math.prod(entry.shape) * entry.dtype.itemsize
        if entry.size_bytes != expected:
            raise TFCheckpointError(f"{self.index_path}: '{name}' has {entry.size_bytes} bytes for "
                                    f"shape {list(entry.shape)} of {entry.dtype_name} ({expected})")
        path = self.data_path(entry.shard)
        try:
            with open(path, "rb") as f:
                f.seek(entry.offset)
                raw = f.read(entry.size_bytes)
        except OSError as exc:
            raise TFCheckpointError(f"{path}: cannot read the checkpoint's data "
                                    f"({exc.strerror or exc.__class__.__name__})") from None
        if len(raw) != entry.size_bytes:
            raise TFCheckpointError(f"{path}: ends before '{name}' (truncated file)")
        if crc32c(raw) != entry.crc32c:
            raise TFCheckpointError(f"{path}: CRC32C mismatch in '{name}' (corrupt file)")
        return np.frombuffer(raw, dtype=entry.dtype).reshape(entry.shape).copy()
