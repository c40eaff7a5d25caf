"""Container-header elimination for the small images of the enhancement layer.

A 112x112 face costs a conventional codec a few hundred bytes of headers before the first
coded coefficient: JFIF markers, quantisation and Huffman tables (about 300 bytes in an
optimised JPEG), the HEIF boxes of AVIF (about 270 bytes), the JP2 boxes and main header of
JPEG 2000. They barely change from face to face, so the enhancement layer deflates the header
part of each stream against a dictionary of typical headers (zlib's preset dictionary, raw
deflate) and keeps the coded data as it is. The dictionary is learned from train-people crops
by ``python -m train header-dictionary`` and shipped in the model registry (kind
``header-dictionary``); a payload names it by its registry tag, so a new Pillow whose headers
differ only compresses less well, it never decodes differently.

Compact stream: varint(length of the deflated header) + deflated header + coded data.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

from facecodec.errors import CorruptPayloadError, UnknownModelError

KIND = "header-dictionary"
MAX_HEADER = 4096
MAX_DICTIONARY = 32768  # deflate's window


def header_length(codec: str, data: bytes) -> int:
    """Bytes of ``data`` (one image file of ``codec``) before its entropy-coded data."""
    if codec == "jpeg":
        i = data.find(b"\xff\xda")  # start of scan; its segment ends the header
        return i + 2 + int.from_bytes(data[i + 2 : i + 4], "big") if i >= 0 else 0
    if codec == "avif":
        i = data.find(b"mdat")
        return i + 4 if i >= 0 else 0
    if codec == "jpeg2000":
        i = data.find(b"\xff\x93")  # start of data of the first tile-part
        return i + 2 if i >= 0 else 0
    if codec == "webp":
        return min(30, len(data))  # RIFF + chunk header + VP8 frame header
    return 0


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes) -> tuple[int, int]:
    n = shift = 0
    for i, b in enumerate(data[:3]):
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i + 1
        shift += 7
    raise CorruptPayloadError("compact image stream: bad header length")


def compact(codec: str, data: bytes, dictionary: bytes) -> bytes:
    """``data`` with its header deflated against ``dictionary``."""
    h = min(header_length(codec, data), MAX_HEADER)
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, dictionary)
    head = c.compress(data[:h]) + c.flush()
    return _varint(len(head)) + head + data[h:]


def expand(data: bytes, dictionary: bytes) -> bytes:
    """The original image file of a :func:`compact` stream."""
    n, k = _read_varint(data)
    if k + n > len(data):
        raise CorruptPayloadError("compact image stream is truncated")
    d = zlib.decompressobj(-15, dictionary)
    try:
        head = d.decompress(data[k : k + n], MAX_HEADER + 1)
    except zlib.error as e:
        raise CorruptPayloadError(f"compact image stream header does not inflate: {e}") from e
    if len(head) > MAX_HEADER or d.unconsumed_tail:
        raise CorruptPayloadError("compact image stream header is too long")
    return head + data[k + n :]


def build(codecs_and_files: list[tuple[str, bytes]]) -> bytes:
    """A dictionary from sample files: their headers, most frequent last (nearest to the data)."""
    from collections import Counter

    counts = Counter(data[: header_length(codec, data)] for codec, data in codecs_and_files)
    out = b""
    for head, _ in sorted(counts.items(), key=lambda kv: kv[1]):
        if head and head not in out:
            out += head
    return out[-MAX_DICTIONARY:]


@lru_cache(maxsize=None)
def dictionary(tag: int) -> bytes:
    """The registered dictionary with registry tag ``tag``."""
    from facecodec import zoo

    for e in zoo.entries(KIND):
        if e.tag == tag:
            return zoo.model_path(e.name).read_bytes()
    raise UnknownModelError(f"image header dictionary tag {tag} is not registered")


def default_tag() -> int:
    """Tag of the newest registered dictionary, 0 when there is none (no compaction)."""
    from facecodec import zoo

    try:
        return zoo.newest(KIND).tag or 0
    except UnknownModelError:
        return 0
