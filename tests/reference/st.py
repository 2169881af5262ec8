"""A minimal safetensors reader and writer on numpy arrays, for the reference scripts.

Format (huggingface/safetensors): an 8-byte little-endian header length H, then H bytes of JSON
{"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
 "__metadata__": {"key": "string value"}} padded with spaces to a multiple of 8, then the raw
little-endian tensor data. Offsets count from the start of the data; this writer lays the
tensors out in the order given.
"""
import json
import struct

import numpy as np

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "U64": np.dtype("<u8"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
CODES = {dtype: code for code, dtype in DTYPES.items()}


def write(path, tensors, metadata=None):
    """Writes {name: numpy array} and {key: str} metadata to path."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        dtype = array.dtype.newbyteorder("<")
        if dtype not in CODES:
            raise ValueError(f"{path}: {name}: unsupported dtype {array.dtype}")
        data = np.ascontiguousarray(array, dtype=dtype).tobytes()
        header[name] = {"dtype": CODES[dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise ValueError(f"{path}: metadata {key} is not a string")
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def read(path):
    """Returns ({name: numpy array}, {key: str}) from path."""
    with open(path, "rb") as f:
        raw = f.read()
    (length,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + length])
    metadata = header.pop("__metadata__", {})
    base = 8 + length
    tensors = {}
    for name, entry in header.items():
        dtype = DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        count = int(np.prod(entry["shape"], dtype=np.int64))
        if end - begin != count * dtype.itemsize or base + end > len(raw):
            raise ValueError(f"{path}: {name}: data offsets do not match dtype and shape")
        tensors[name] = np.frombuffer(raw, dtype, count, base + begin).reshape(entry["shape"])
    return tensors, metadata
