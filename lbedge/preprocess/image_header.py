"""Width and height of an encoded image, read from its header without decoding it (pure Python).

lbedge checks the size an image will decode to before handing its bytes to OpenCV, so that a small
file that claims a huge image is refused instead of allocated. Only the formats named in
:data:`FORMATS` are read; any other signature, and a header cut short, is refused rather than guessed:
an image lbedge cannot measure is never decoded.

Each reader is given a :class:`Source`: ``read(offset, size) -> bytes`` (at most ``size`` bytes at
``offset``; fewer at the end of the data) and the total ``length``, so the same code measures a file,
which it seeks through, and bytes in memory. The work is bounded whatever the input: a few small
reads, at most ``_MAX_STEPS`` JPEG segments or TIFF directory entries, ``_MAX_PNG_CHUNKS`` PNG chunk
headers, ``_PNM_HEADER`` bytes of a PNM header, and one pass in blocks over a JPEG's scan data.

Beyond the size, three things a decoder trusts are checked, so that a small file cannot make it allocate
or work far beyond what its pixel count implies: PNG chunks must lie within the data (OpenCV allocates each
chunk at its declared length before reading it), a JPEG may have at most :data:`MAX_JPEG_SCANS` scans
(each scan of a progressive JPEG is a pass over the whole image), and a TIFF tile may not be much larger
than the image (OpenCV allocates one tile).
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable

from ..errors import InputError

#: the formats whose header lbedge reads, for error messages
FORMATS = "PNG, JPEG, BMP, WebP, TIFF (and BigTIFF), PNM (PBM, PGM, PPM) and GIF"

_MAX_STEPS = 4096  # JPEG segments (or fill bytes) before and after the frame header, TIFF entries
_MAX_PNG_CHUNKS = 1 << 18  # chunks of one PNG (encoders write a few per megabyte)
#: scans of one JPEG: a progressive JPEG is decoded once per scan, so its cost grows with their number
#: (encoders write about ten); more is refused
MAX_JPEG_SCANS = 256
_SCAN_BLOCK = 1 << 18  # bytes read at a time when looking for the end of a JPEG scan
_MIN_TILE_AREA = 1 << 20  # a TIFF tile may always be this large, whatever the image size
_PNM_HEADER = 4096  # bytes a PNM header (magic, comments, width, height) may take
_SIGNATURE = 16  # bytes read to recognise a format
# JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic coded)
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# JPEG markers without a length field
_STANDALONE = frozenset({0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8})
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker, as found inside entropy-coded data
_TIFF_WIDTH, _TIFF_HEIGHT, _TIFF_TILE_WIDTH, _TIFF_TILE_HEIGHT = 256, 257, 322, 323
_TIFF_SHORT, _TIFF_LONG, _TIFF_LONG8 = 3, 4, 16


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an encoded image says: its format and the size it decodes to."""

    format: str
    width: int
    height: int


class _Unreadable(Exception):
    """The header is cut short or malformed (internal: turned into an ``InputError`` naming the source)."""


@dataclass(frozen=True)
class Source:
    """Random access to encoded data: ``read(offset, size)`` returns at most ``size`` bytes (none outside the
    data), ``length`` is the total number of bytes."""

    read: Callable[[int, int], bytes]
    length: int


def bytes_source(data: bytes | bytearray | memoryview) -> Source:
    """A source over bytes in memory."""
    view = memoryview(data).cast("B")

    def read(offset: int, size: int) -> bytes:
        return bytes(view[offset : offset + size]) if 0 <= offset < view.nbytes else b""

    return Source(read, view.nbytes)


def file_source(f: BinaryIO) -> Source:
    """A source over an open binary file (it seeks, so only the bytes asked for are read)."""

    length = os.fstat(f.fileno()).st_size

    def read(offset: int, size: int) -> bytes:
        if not 0 <= offset < length:  # also keeps absurd offsets from a header away from seek
            return b""
        f.seek(offset)
        return f.read(size)

    return Source(read, length)


def read_header(src: Source, what: str) -> ImageHeader:
    """The format and size of the image in ``src``; ``what`` names it in errors.

    An unknown signature, a truncated or malformed header and a zero width or height are all an
    ``InputError`` that names the formats lbedge reads.
    """
    head = src.read(0, _SIGNATURE)
    if not head:
        raise InputError(f"cannot decode {what}: it is empty (0 bytes)")
    fmt = _format_of(head)
    if fmt is None:
        raise InputError(
            f"cannot decode {what}: it starts with {head[:8]!r}, not an image format lbedge reads "
            f"({FORMATS}); convert it to one of these"
        )
    try:
        width, height = _PARSERS[fmt](src, head)
    except _Unreadable as exc:
        raise InputError(
            f"cannot decode {what}: its {fmt} data is truncated or malformed ({exc}); lbedge reads {FORMATS}"
        ) from None
    if width <= 0 or height <= 0:
        raise InputError(f"cannot decode {what}: its {fmt} header says {width} x {height} pixels (an empty image)")
    return ImageHeader(fmt, width, height)


def _format_of(head: bytes) -> str | None:
    """The format a signature belongs to, or None."""
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return None  # an ISO media container (AVIF, HEIF): OpenCV would pick another decoder
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "PNM"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def _need(src: Source, offset: int, size: int, part: str) -> bytes:
    """Exactly ``size`` bytes at ``offset``, or ``_Unreadable`` naming the missing ``part``."""
    data = src.read(offset, size)
    if len(data) < size:
        raise _Unreadable(f"the data ends before the {part}")
    return data


def _png(src: Source, head: bytes) -> tuple[int, int]:
    """PNG: the IHDR chunk, which must come first; then every chunk must end within the data."""
    chunk = _need(src, 8, 16, "IHDR chunk")
    if chunk[4:8] != b"IHDR":
        raise _Unreadable("the first chunk is not IHDR")
    width, height = struct.unpack(">II", chunk[8:16])
    _check_png_chunks(src)
    return width, height


def _check_png_chunks(src: Source) -> None:
    """Walk the chunk headers to IEND: a chunk that claims to run past the end of the data is refused
    (OpenCV would allocate its declared length), as are more than ``_MAX_PNG_CHUNKS`` chunks."""
    offset = 8
    for _ in range(_MAX_PNG_CHUNKS):
        length, kind = struct.unpack(">I4s", _need(src, offset, 8, "IEND chunk"))
        end = offset + 12 + length
        if end > src.length:
            raise _Unreadable(f"chunk {kind!r} at byte {offset} claims {length} bytes, past the end of the data")
        if kind == b"IEND":
            return
        offset = end
    raise _Unreadable(f"more than {_MAX_PNG_CHUNKS} chunks")


def _jpeg(src: Source, head: bytes) -> tuple[int, int]:
    """JPEG: walk the marker segments to the first start-of-frame (SOFn) and read its size; then count the
    scans."""
    offset = 2
    for _ in range(_MAX_STEPS):
        marker = _need(src, offset, 2, "frame header (SOF)")
        if marker[0] != 0xFF:
            raise _Unreadable(f"no marker at byte {offset}")
        code = marker[1]
        if code == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if code in _STANDALONE:
            offset += 2
            continue
        if code in (0xD9, 0xDA):
            raise _Unreadable("the image data starts before any frame header (SOF)")
        length = struct.unpack(">H", _need(src, offset + 2, 2, "segment length"))[0]
        if code in _SOF:
            frame = _need(src, offset + 4, 5, "frame header (SOF)")
            height, width = struct.unpack(">HH", frame[1:5])
            _check_jpeg_scans(src, offset)
            return width, height
        if length < 2:
            raise _Unreadable(f"a segment at byte {offset} has length {length}")
        offset += 2 + length
    raise _Unreadable(f"more than {_MAX_STEPS} segments before the frame header")


def _check_jpeg_scans(src: Source, offset: int) -> None:
    """Walk the segments from the frame header at ``offset`` to the end of the image (EOI) as a decoder does,
    skipping each scan's entropy-coded data, and refuse more than ``MAX_JPEG_SCANS`` scans."""
    scans = 0
    for _ in range(_MAX_STEPS):
        marker = src.read(offset, 4)
        if len(marker) < 4:
            return  # the data ends: the decoder stops there too
        if marker[0] != 0xFF or marker[1] == 0x00:
            offset = _next_marker(src, offset)  # stray bytes: the decoder skips to the next marker
            continue
        code = marker[1]
        if code == 0xD9:
            return
        if code == 0xFF or code in _STANDALONE:
            offset += 1 if code == 0xFF else 2
            continue
        offset += 2 + struct.unpack(">H", marker[2:4])[0]
        if code == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise InputError(
                    f"JPEG with more than {MAX_JPEG_SCANS} scans: decoding costs a pass over the "
                    "whole image per scan, so lbedge refuses it; re-encode it (baseline JPEG)"
                )
            offset = _next_marker(src, offset)
    raise _Unreadable(f"more than {_MAX_STEPS} segments")


def _next_marker(src: Source, offset: int) -> int:
    """Offset of the first marker at or after ``offset`` that ends entropy-coded data (not a stuffed 0xFF 0x00,
    a restart marker or a fill byte), reading in blocks; the end of the data if there is none."""
    while offset < src.length:
        block = src.read(offset, min(_SCAN_BLOCK + 1, src.length - offset))
        found = _MARKER.search(block)
        if found:
            return offset + found.start()
        if len(block) <= 1:
            break
        offset += len(block) - 1  # keep one byte: a marker may straddle two blocks
    return src.length


def _bmp(src: Source, head: bytes) -> tuple[int, int]:
    """BMP: the size fields of the DIB header (16-bit in the old OS/2 header, signed 32-bit otherwise)."""
    size = struct.unpack("<I", _need(src, 14, 4, "DIB header"))[0]
    if size == 12:
        width, height = struct.unpack("<HH", _need(src, 18, 4, "DIB header"))
        return width, height
    if size < 16:
        raise _Unreadable(f"unknown DIB header size {size}")
    width, height = struct.unpack("<ii", _need(src, 18, 8, "DIB header"))
    return width, abs(height)  # a negative height means rows stored top-down


def _webp(src: Source, head: bytes) -> tuple[int, int]:
    """WebP: the canvas of a VP8X file, or the frame size of a simple lossy (VP8) or lossless (VP8L) one."""
    chunk = _need(src, 12, 8, "first chunk")
    kind = chunk[:4]
    if kind == b"VP8X":
        data = _need(src, 20, 10, "VP8X chunk")
        return 1 + int.from_bytes(data[4:7], "little"), 1 + int.from_bytes(data[7:10], "little")
    if kind == b"VP8 ":
        data = _need(src, 20, 10, "VP8 frame header")
        if data[3:6] != b"\x9d\x01\x2a":
            raise _Unreadable("no VP8 start code")
        width, height = struct.unpack("<HH", data[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L":
        data = _need(src, 20, 5, "VP8L header")
        if data[0] != 0x2F:
            raise _Unreadable("no VP8L signature")
        bits = int.from_bytes(data[1:5], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    raise _Unreadable(f"unknown first chunk {kind!r}")


def _tiff(src: Source, head: bytes) -> tuple[int, int]:
    """TIFF and BigTIFF: the ImageWidth and ImageLength tags of the first image directory (whose tiles, if
    any, may not be much larger than the image)."""
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    if big:
        unit, zero, first = struct.unpack(order + "HHQ", _need(src, 4, 12, "BigTIFF header"))
        if unit != 8 or zero != 0:
            raise _Unreadable("bad BigTIFF header")
        count_fmt, entry_size = "Q", 20
    else:
        first = struct.unpack(order + "I", _need(src, 4, 4, "TIFF header"))[0]
        count_fmt, entry_size = "H", 12
    count_size = struct.calcsize(count_fmt)
    count = struct.unpack(order + count_fmt, _need(src, first, count_size, "first image directory"))[0]
    entries = src.read(first + count_size, min(count, _MAX_STEPS) * entry_size)
    tags = _tiff_tags(entries, order, big)
    if _TIFF_WIDTH not in tags or _TIFF_HEIGHT not in tags:
        raise _Unreadable("the first image directory has no ImageWidth and ImageLength")
    width, height = tags[_TIFF_WIDTH], tags[_TIFF_HEIGHT]
    tile = tags.get(_TIFF_TILE_WIDTH, 0) * tags.get(_TIFF_TILE_HEIGHT, 0)
    if tile > max(_MIN_TILE_AREA, (width + 15) // 16 * 16 * ((height + 15) // 16 * 16)):
        raise _Unreadable(
            f"tiles of {tags[_TIFF_TILE_WIDTH]} x {tags[_TIFF_TILE_HEIGHT]} pixels for an image of {width} x {height}"
        )
    return width, height


def _tiff_tags(entries: bytes, order: str, big: bool) -> dict[int, int]:
    """The size and tile-size tags found in raw directory entries (SHORT, LONG or LONG8 values)."""
    entry_size = 20 if big else 12
    wanted = (_TIFF_WIDTH, _TIFF_HEIGHT, _TIFF_TILE_WIDTH, _TIFF_TILE_HEIGHT)
    found: dict[int, int] = {}
    for at in range(0, len(entries) - entry_size + 1, entry_size):
        tag, kind = struct.unpack(order + "HH", entries[at : at + 4])
        if tag not in wanted:
            continue
        value = entries[at + (12 if big else 8) : at + entry_size]
        if kind == _TIFF_SHORT:
            found[tag] = struct.unpack(order + "H", value[:2])[0]
        elif kind == _TIFF_LONG:
            found[tag] = struct.unpack(order + "I", value[:4])[0]
        elif kind == _TIFF_LONG8 and big:
            found[tag] = struct.unpack(order + "Q", value[:8])[0]
        else:
            raise _Unreadable(f"tag {tag} has type {kind}")
    return found


def _pnm(src: Source, head: bytes) -> tuple[int, int]:
    """PBM, PGM, PPM: the first two decimal numbers after the magic, past whitespace and comments."""
    text = src.read(0, _PNM_HEADER)
    pos, numbers = 2, []
    while len(numbers) < 2:
        while pos < len(text) and (text[pos : pos + 1].isspace() or text[pos] == ord("#")):
            if text[pos] == ord("#"):  # a comment runs to the end of the line
                end = text.find(b"\n", pos)
                pos = len(text) if end < 0 else end
            pos += 1
        start = pos
        while pos < len(text) and text[pos : pos + 1].isdigit() and pos - start <= 10:
            pos += 1
        if pos == start or pos >= len(text) or pos - start > 10:
            raise _Unreadable(f"no width and height within its first {_PNM_HEADER} bytes")
        numbers.append(int(text[start:pos]))
    return numbers[0], numbers[1]


def _gif(src: Source, head: bytes) -> tuple[int, int]:
    """GIF: the logical screen (every frame must fit in it; the decoder allocates it)."""
    width, height = struct.unpack("<HH", _need(src, 6, 4, "logical screen descriptor"))
    return width, height


_PARSERS: dict[str, Callable[[Source, bytes], tuple[int, int]]] = {
    "PNG": _png,
    "JPEG": _jpeg,
    "BMP": _bmp,
    "WebP": _webp,
    "TIFF": _tiff,
    "PNM": _pnm,
    "GIF": _gif,
}
