"""Is it a poster: the format from its magic bytes, its size from the header, a full decode.

Shared by the fetcher (before a poster is stored) and `predict` (before a file is served);
needs Pillow only.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from tasks.rejections import Rejected

MAX_PIXELS = 40_000_000  # width*height; checked before decoding


def sniff_format(data: bytes) -> str | None:
    """jpeg/png/webp from the magic bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by an image's header, read without decoding; None if none.

    Past twice Pillow's own limit it raises Image.DecompressionBombError instead.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we cap it ourselves
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError:
        raise
    except Exception:  # Pillow's parsers raise many types on hostile bytes
        return None


def check_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of a complete, decodable poster under the pixel cap."""
    fmt = sniff_format(data)
    if fmt is None:
        raise Rejected("not_an_image", f"no JPEG/PNG/WebP signature ({len(data)} bytes)")
    declared = 8 + int.from_bytes(data[4:8], "little")  # the RIFF size of a WebP file
    if fmt == "webp" and len(data) < declared:
        raise Rejected("truncated", f"WebP declares {declared} bytes, got {len(data)}")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt.upper()]) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise Rejected("too_many_pixels", f"{width}x{height} exceeds {max_pixels} pixels")
            if fmt == "jpeg":
                im.draft("L", (1, 1))  # 1/8 scale, luma only: still reads every byte, 2.5x faster
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected("too_many_pixels", str(exc)) from None
    except Rejected:
        raise
    except Exception as exc:  # Pillow's parsers raise many types on hostile bytes
        outcome = "truncated" if "truncat" in str(exc).lower() else "not_an_image"
        raise Rejected(outcome, f"{fmt} does not decode: {exc}") from None
    return fmt, width, height
