"""Image checks and transformations for uploads: validation, thumbnails, GPS removal."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from findme.errors import BadRequest, TooLarge, UnsupportedMedia

pillow_heif.register_heif_opener()

CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    # Cameras that embed a preview write MPO: a JPEG to every browser and decoder.
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "HEIF": "image/heic",
}
GPS_IFD_TAG = 0x8825


class EmptyFile(BadRequest):
    """The file is empty. Pick the photo again and re-send it."""

    code = "empty_file"


class CorruptImage(BadRequest):
    """The photo is damaged or incomplete. Copy it from the camera again and re-send it."""

    code = "corrupt_image"


class TooManyPixels(TooLarge):
    """The photo has too many pixels to process."""

    code = "too_many_pixels"


@dataclass(frozen=True)
class PreparedImage:
    content_type: str
    width: int
    height: int
    thumbnail: bytes


def prepare_upload(path: Path, *, max_pixels: int, thumbnail_px: int) -> PreparedImage:
    """Check an uploaded file is a whole, supported image; blank its GPS data in place.

    Runs in a worker thread: it decodes the image (at reduced scale where the format allows)
    so a truncated file is caught here rather than in the pipeline.
    """
    if path.stat().st_size == 0:
        raise EmptyFile()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Decoded from the file, not from a copy in memory: a request's photos being checked
            # at once must not each hold their bytes twice.
            image = Image.open(path)
    except UnidentifiedImageError:
        raise UnsupportedMedia(
            "This file is not a photo FindMe can read. Send JPEG, PNG, WebP or HEIC photos."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels(_pixel_sentence(max_pixels)) from None
    with image:
        content_type = CONTENT_TYPES.get(image.format or "")
        if content_type is None:
            raise UnsupportedMedia(
                f"{image.format} images are not supported. Send JPEG, PNG, WebP or HEIC photos."
            )
        width, height = image.size
        if width * height > max_pixels:
            raise TooManyPixels(_pixel_sentence(max_pixels))
        exif_tiff = _exif_tiff(image)
        try:
            thumbnail = _thumbnail(image, thumbnail_px)
        except (OSError, SyntaxError, ValueError, struct.error) as error:
            raise CorruptImage() from error
    if exif_tiff and _has_gps(exif_tiff):
        data = bytearray(path.read_bytes())
        if _blank_gps(data, exif_tiff):
            path.write_bytes(data)
    return PreparedImage(content_type=content_type, width=width, height=height, thumbnail=thumbnail)


def _pixel_sentence(max_pixels: int) -> str:
    return (
        f"The photo has more than {max_pixels / 1e6:.0f} megapixels. "
        "Export it at a smaller size and send it again."
    )


def thumbnail_of(
    data: bytes, *, size_px: int, around: tuple[int, int, int, int] | None = None
) -> bytes:
    """A JPEG thumbnail of an image already checked by `prepare_upload` (a stored selfie),
    square around the face box `around` (in the upright image's pixels) when there is one."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        upright = ImageOps.exif_transpose(image)
    if around is not None:
        left, top, right, bottom = around
        # The face and some hair and shoulders: a square twice the face's size.
        half = max(right - left, bottom - top)
        centre_x, centre_y = (left + right) // 2, (top + bottom) // 2
        upright = upright.crop((centre_x - half, centre_y - half, centre_x + half, centre_y + half))
    return _thumbnail(upright, size_px)


def _thumbnail(image: Image.Image, size_px: int) -> bytes:
    # draft() lets the JPEG decoder scale by 1/2..1/8 while decoding: a 24 MP photo becomes a
    # thumbnail without ever holding its full-size pixels. load() still reads every byte, so a
    # truncated file fails here.
    image.draft("RGB", (size_px, size_px))
    image.load()
    oriented = ImageOps.exif_transpose(image)
    oriented.thumbnail((size_px, size_px), Image.Resampling.LANCZOS)
    oriented = to_rgb(oriented)
    out = io.BytesIO()
    oriented.save(out, "JPEG", quality=82, optimize=True, progressive=True)
    return out.getvalue()


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels; transparent areas become white rather than whatever hides under the alpha."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if image.mode == "RGB" else image.convert("RGB")


def _exif_tiff(image: Image.Image) -> bytes | None:
    raw = image.info.get("exif")
    if not isinstance(raw, bytes) or len(raw) < 8:
        return None
    return raw[6:] if raw.startswith(b"Exif\x00\x00") else raw


def _has_gps(exif_tiff: bytes) -> bool:
    order = exif_tiff[:2]
    if order not in (b"II", b"MM"):
        return False
    return _ifd0_value(exif_tiff, "<" if order == b"II" else ">", GPS_IFD_TAG) is not None


def _blank_gps(data: bytearray, exif_tiff: bytes) -> bool:
    """Empty the EXIF GPS directory where it lies in the file, keeping every other byte.

    The file's length and its image data are unchanged: no re-encoding, no offsets to fix.
    """
    start = data.find(exif_tiff[:64])
    if start < 0:
        return False
    order = exif_tiff[:2]
    if order not in (b"II", b"MM"):
        return False
    endian = "<" if order == b"II" else ">"
    gps_offset = _ifd0_value(exif_tiff, endian, GPS_IFD_TAG)
    if gps_offset is None or gps_offset + 2 > len(exif_tiff):
        return False
    (count,) = struct.unpack_from(endian + "H", exif_tiff, gps_offset)
    end = gps_offset + 2 + 12 * count + 4
    if end > len(exif_tiff):
        return False
    for index in range(count):
        entry = gps_offset + 2 + 12 * index
        _tag, kind, items, value = struct.unpack_from(endian + "HHII", exif_tiff, entry)
        size = _TYPE_SIZES.get(kind, 1) * items
        if size > 4 and value + size <= len(exif_tiff):
            data[start + value : start + value + size] = bytes(size)
    data[start + gps_offset : start + end] = bytes(end - gps_offset)
    _fix_png_crc(data, start)
    return True


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


def _ifd0_value(tiff: bytes, endian: str, tag: int) -> int | None:
    (ifd0,) = struct.unpack_from(endian + "I", tiff, 4)
    if ifd0 + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(endian + "H", tiff, ifd0)
    for index in range(count):
        entry = ifd0 + 2 + 12 * index
        if entry + 12 > len(tiff):
            return None
        entry_tag, _kind, _items, value = struct.unpack_from(endian + "HHII", tiff, entry)
        if entry_tag == tag:
            return int(value)
    return None


def _fix_png_crc(data: bytearray, tiff_start: int) -> None:
    """A PNG eXIf chunk carries a CRC over its bytes: recompute it after editing."""
    if not data.startswith(b"\x89PNG") or data[tiff_start - 4 : tiff_start] != b"eXIf":
        return
    (length,) = struct.unpack_from(">I", data, tiff_start - 8)
    crc = zlib.crc32(data[tiff_start - 4 : tiff_start + length])
    struct.pack_into(">I", data, tiff_start + length, crc)
