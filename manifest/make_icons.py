"""Draw the Teams app icons: ``color.png`` (192×192) and ``outline.png`` (32×32).

Pure Python (``zlib`` + ``struct``), so anyone can regenerate the committed PNGs byte for byte::

    python manifest/make_icons.py            # writes manifest/color.png and manifest/outline.png
    python manifest/make_icons.py --out DIR  # somewhere else

The mark is a shield holding a padlock: the bot contains (locks) a compromised identity. Shapes are
described in continuous pixel coordinates and sampled on a fine grid inside every pixel
(supersampling), which gives smooth, anti-aliased edges.

Teams' rules (https://learn.microsoft.com/microsoftteams/platform/concepts/build-and-test/apps-package):

- ``color.png``: 192×192, full colour; the background fills the square (Teams rounds the corners)
  and the symbol sits in the central area, clear of the edges.
- ``outline.png``: 32×32, white on transparent: every pixel is either fully transparent or white
  with some alpha. The anti-aliasing below therefore only ever varies alpha, never colour.
"""

from __future__ import annotations

import argparse
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The accent colour of the manifest (accentColor) is the background's middle tone.
ACCENT = (0x2B, 0x3F, 0xB4)
BACKGROUND_TOP = (0x35, 0x4C, 0xCF)
BACKGROUND_BOTTOM = (0x20, 0x2E, 0x8C)
SHIELD_LIGHT = (0xFF, 0xFF, 0xFF)
SHIELD_SHADE = (0xDD, 0xE3, 0xF8)  # the shield's right half: a fold that gives it depth
LOCK = (0x20, 0x2E, 0x8C)

RGB = tuple[int, int, int]
Shape = Callable[[float, float], bool]


# -- shapes (x, y in pixels of the icon being drawn; y grows downwards) -----------------------


def shield(cx: float, top: float, bottom: float, half_width: float, dip: float) -> Shape:
    """A heraldic shield: straight sides down to 45 % of its height, then curving to a point.

    ``dip`` is how far the middle of the top edge sits below its corners.
    """
    height = bottom - top
    shoulder = top + 0.45 * height
    # Lower edge: a quadratic Bézier from the shoulder (x = ±1) through (±1, 85 %) to the tip.
    table: list[tuple[float, float]] = []
    for step in range(2001):
        t = step / 2000
        x = (1 - t) ** 2 * 1.0 + 2 * (1 - t) * t * 1.0
        y = (1 - t) ** 2 * 0.45 + 2 * (1 - t) * t * 0.85 + t**2 * 1.0
        table.append((y, x))

    def half_width_at(v: float) -> float:
        # v in [0.45, 1]: binary search the (monotonic) table.
        lo, hi = 0, len(table) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if table[mid][0] < v:
                lo = mid
            else:
                hi = mid
        (y0, x0), (y1, x1) = table[lo], table[hi]
        return x0 if y1 == y0 else x0 + (x1 - x0) * (v - y0) / (y1 - y0)

    def inside(x: float, y: float) -> bool:
        u = (x - cx) / half_width
        if abs(u) > 1:
            return False
        if y < top + dip * math.cos(u * math.pi / 2) ** 2:
            return False
        if y <= shoulder:
            return True
        v = (y - top) / height
        return v <= 1 and abs(u) <= half_width_at(v)

    return inside


def rounded_rect(left: float, top: float, right: float, bottom: float, radius: float) -> Shape:
    """A rectangle with circular corners of ``radius``."""

    def inside(x: float, y: float) -> bool:
        if not (left <= x <= right and top <= y <= bottom):
            return False
        nx = min(max(x, left + radius), right - radius)
        ny = min(max(y, top + radius), bottom - radius)
        return (x - nx) ** 2 + (y - ny) ** 2 <= radius**2

    return inside


def shackle(cx: float, cy: float, outer: float, inner: float, legs_to: float) -> Shape:
    """A padlock's shackle: the upper half of a ring whose two legs run down to ``legs_to``."""

    def inside(x: float, y: float) -> bool:
        if y <= cy:
            distance = math.hypot(x - cx, y - cy)
            return inner <= distance <= outer
        return y <= legs_to and inner <= abs(x - cx) <= outer

    return inside


def keyhole(cx: float, cy: float, radius: float, slot_half_width: float, slot_bottom: float) -> Shape:
    """A keyhole: a round head and a slot that widens slightly towards the bottom."""

    def inside(x: float, y: float) -> bool:
        if math.hypot(x - cx, y - cy) <= radius:
            return True
        if cy <= y <= slot_bottom:
            widening = slot_half_width * (1 + 0.35 * (y - cy) / (slot_bottom - cy))
            return abs(x - cx) <= widening
        return False

    return inside


def ring_of(shape: Shape, width: float, samples: int = 16) -> Shape:
    """The band of ``shape`` within ``width`` pixels of its edge (an outline stroke, inside)."""
    offsets = [
        (width * math.cos(2 * math.pi * k / samples), width * math.sin(2 * math.pi * k / samples))
        for k in range(samples)
    ]

    def inside(x: float, y: float) -> bool:
        if not shape(x, y):
            return False
        return any(not shape(x + dx, y + dy) for dx, dy in offsets)

    return inside


# -- rendering --------------------------------------------------------------------------------


def render(size: int, colour_at: Callable[[float, float], tuple[RGB, float]], grid: int) -> bytes:
    """RGBA bytes of a ``size``×``size`` image; each pixel averages ``grid``×``grid`` samples.

    ``colour_at(x, y)`` gives the colour and coverage (0 transparent .. 1 opaque) at a point.
    Colours are averaged weighted by coverage (premultiplied), so edges blend without dark fringes.
    """
    rows = bytearray()
    step = 1 / grid
    for py in range(size):
        rows.append(0)  # PNG filter type 0 (None) for this row
        for px in range(size):
            red = green = blue = alpha = 0.0
            for sy in range(grid):
                for sx in range(grid):
                    (r, g, b), a = colour_at(px + (sx + 0.5) * step, py + (sy + 0.5) * step)
                    red += r * a
                    green += g * a
                    blue += b * a
                    alpha += a
            samples = grid * grid
            if alpha == 0:
                rows += bytes((0, 0, 0, 0))
                continue
            rows += bytes(
                (
                    round(red / alpha),
                    round(green / alpha),
                    round(blue / alpha),
                    round(255 * alpha / samples),
                )
            )
    return bytes(rows)


def png(size: int, filtered_rgba: bytes) -> bytes:
    """A PNG file (8-bit RGBA, not interlaced) from rows that already carry their filter byte."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(filtered_rgba, 9))
        + chunk(b"IEND", b"")
    )


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """Linear blend from ``a`` (t = 0) to ``b`` (t = 1)."""
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def color_icon() -> bytes:
    """192×192: a white shield with a padlock on a deep blue, softly graded background."""
    size = 192
    body = shield(cx=96, top=30, bottom=166, half_width=54, dip=7)
    lock_body = rounded_rect(70, 92, 122, 134, 7)
    lock_shackle = shackle(cx=96, cy=92, outer=18, inner=11, legs_to=96)
    hole = keyhole(cx=96, cy=108, radius=6, slot_half_width=2.6, slot_bottom=124)

    def colour_at(x: float, y: float) -> tuple[RGB, float]:
        if body(x, y):
            if lock_body(x, y):
                return (SHIELD_LIGHT if hole(x, y) else LOCK), 1.0
            if lock_shackle(x, y):
                return LOCK, 1.0
            return (SHIELD_LIGHT if x < 96 else SHIELD_SHADE), 1.0
        # Diagonal gradient, lighter at the top left.
        t = min(max((x + y) / (2 * size), 0.0), 1.0)
        return mix(BACKGROUND_TOP, BACKGROUND_BOTTOM, t), 1.0

    return png(size, render(size, colour_at, grid=6))


def outline_icon() -> bytes:
    """32×32: the same shield as a white stroke, the padlock solid, on transparency."""
    size = 32
    white = (255, 255, 255)
    body = shield(cx=16, top=2.0, bottom=30, half_width=12, dip=1.0)
    stroke = ring_of(body, 2.1)
    lock_body = rounded_rect(11.2, 15.2, 20.8, 22.6, 1.4)
    lock_shackle = shackle(cx=16, cy=15.2, outer=3.7, inner=2.0, legs_to=16)
    hole = keyhole(cx=16, cy=18.2, radius=1.25, slot_half_width=0.55, slot_bottom=20.8)

    def colour_at(x: float, y: float) -> tuple[RGB, float]:
        if stroke(x, y) or lock_shackle(x, y) or (lock_body(x, y) and not hole(x, y)):
            return white, 1.0
        return white, 0.0

    return png(size, render(size, colour_at, grid=8))


def main() -> None:
    """Write both icons into ``--out`` (default: this folder)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: manifest/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in (("color.png", color_icon()), ("outline.png", outline_icon())):
        (args.out / name).write_bytes(data)
        print(f"wrote {args.out / name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
