"""A fast reader of a GGUF file's header: its metadata and tensor table, not its weights.

gguf's own ``GGUFReader`` makes a numpy view of every element of every array
field, which for the starter's 49,152-token vocabulary and its merges takes
about 5 s, paid at every chat start. This reads the same header in
milliseconds: scalars and strings are kept, arrays are skipped (only their
length is kept). Layout: magic ``GGUF``, version, tensor count, field count,
the fields (key, value type, value), the tensor infos (name, dimensions, type,
offset), then the tensor data at the next multiple of ``general.alignment``.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

# gguf's GGUFValueType codes -> struct formats of the scalar types.
_SCALARS = {
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"
}  # fmt: skip
_STRING, _ARRAY = 8, 9
_DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: int  # a gguf.GGMLQuantizationType value
    offset: int  # from the start of the tensor data


@dataclass(frozen=True)
class GGUFHeader:
    fields: dict[str, object]  # scalars and strings; an array field holds its length
    tensors: list[TensorInfo]
    data_offset: int
    file_size: int

    def data_end(self) -> int:
        """Where the last tensor's data ends: past the file's end means it is truncated.

        Raises ValueError for a tensor type gguf does not know."""
        import gguf

        end = self.data_offset
        for tensor in self.tensors:
            kind = gguf.GGMLQuantizationType(tensor.type)  # ValueError if unknown
            block, size = gguf.GGML_QUANT_SIZES[kind]
            elements = 1
            for dim in tensor.shape:
                elements *= dim
            end = max(end, self.data_offset + tensor.offset + elements // block * size)
        return end


class _Cursor:
    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str):
        value = struct.unpack_from("<" + fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.take("Q")
        if self.at + length > len(self.data):
            raise ValueError("a string runs past the end of the file")
        text = self.data[self.at : self.at + length].decode("utf-8", errors="replace")
        self.at += length
        return text

    def skip_strings(self, count: int) -> None:
        for _ in range(count):
            self.at += 8 + struct.unpack_from("<Q", self.data, self.at)[0]

    def value(self, kind: int) -> object:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item == _STRING:
                self.skip_strings(count)
            elif item in _SCALARS:
                self.at += count * struct.calcsize(_SCALARS[item])
            else:
                for _ in range(count):  # arrays of arrays: rare, walked one by one
                    self.value(item)
            return count
        raise ValueError(f"unknown value type {kind}")


def read_header(path: Path) -> GGUFHeader:
    """The header of the GGUF file at ``path``; ValueError if it is not one, or is cut short."""
    with open(path, "rb") as file:
        try:
            data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            raise ValueError("the file is empty") from None
    with data:
        cursor = _Cursor(data)
        try:
            if data[:4] != b"GGUF":
                raise ValueError("no GGUF magic")
            cursor.at = 4
            version, n_tensors, n_fields = cursor.take("I"), cursor.take("Q"), cursor.take("Q")
            if version < 2:
                raise ValueError(f"GGUF version {version} is too old")
            fields = {}
            for _ in range(n_fields):
                key = cursor.string()
                fields[key] = cursor.value(cursor.take("I"))
            tensors = []
            for _ in range(n_tensors):
                name = cursor.string()
                dims = tuple(cursor.take("Q") for _ in range(cursor.take("I")))
                tensors.append(TensorInfo(name, dims, cursor.take("I"), cursor.take("Q")))
        except (struct.error, OverflowError, IndexError):
            raise ValueError("the header runs past the end of the file") from None
        alignment = fields.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise ValueError(f"general.alignment is {alignment!r}")
        data_offset = -(-cursor.at // alignment) * alignment
        return GGUFHeader(fields, tensors, data_offset, len(data))
