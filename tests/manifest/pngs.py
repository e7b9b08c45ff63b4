"""Write small PNGs for the icon checks: any size, any pixels, any row filter."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

Pixel = tuple[int, int, int, int]


def encode_png(
    width: int,
    height: int,
    pixel: Callable[[int, int], Pixel],
    *,
    filter_for_row: Callable[[int], int] = lambda y: 0,
) -> bytes:
    """An 8-bit RGBA PNG; row ``y`` is encoded with PNG filter ``filter_for_row(y)`` (0-4)."""
    raw = bytearray()
    previous = bytes(width * 4)
    for y in range(height):
        line = bytes(channel for x in range(width) for channel in pixel(x, y))
        kind = filter_for_row(y)
        raw.append(kind)
        raw += _filter(kind, line, previous)
        previous = line
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw)))
        + _chunk(b"IEND", b"")
    )


def write_png(path: Path, width: int, height: int, pixel: Callable[[int, int], Pixel]) -> Path:
    """Write :func:`encode_png` to ``path``."""
    path.write_bytes(encode_png(width, height, pixel))
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _filter(kind: int, line: bytes, previous: bytes) -> bytes:
    out = bytearray()
    for i, value in enumerate(line):
        left = line[i - 4] if i >= 4 else 0
        up = previous[i]
        upper_left = previous[i - 4] if i >= 4 else 0
        predictor = {
            0: 0,
            1: left,
            2: up,
            3: (left + up) // 2,
            4: _paeth(left, up, upper_left),
        }[kind]
        out.append((value - predictor) & 0xFF)
    return bytes(out)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c
