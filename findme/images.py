"""Image checks and transformations: uploads checked from their headers, GPS blanked in place,
grid thumbnails encoded from pixels a job has decoded."""

from __future__ import annotations

import functools
import io
import math
import mmap
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
# The colour of an empty grid tile (static/css/app.css `.tile`): a photo not processed yet.
PLACEHOLDER_RGB = (230, 232, 239)


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
class CheckedImage:
    content_type: str
    width: int
    height: int


def check_upload(path: Path, *, max_pixels: int) -> CheckedImage:
    """Check an uploaded file from its header: a supported format, within the pixel limit, and
    whole (its end marker is there); blank its GPS data in place.

    No pixel is decoded here: the photo's job decodes it for its faces and its thumbnail, and a
    photo whose header is fine but whose pixels are broken fails there, with its reason.
    """
    if path.stat().st_size == 0:
        raise EmptyFile()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Opening reads the header only.
            image = Image.open(path)
    except UnidentifiedImageError:
        raise UnsupportedMedia(
            "This file is not a photo FindMe can read. Send JPEG, PNG, WebP or HEIC photos."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels(_pixel_sentence(max_pixels)) from None
    except (OSError, SyntaxError, ValueError, struct.error) as error:
        raise CorruptImage() from error
    with image:
        image_format = image.format or ""
        content_type = CONTENT_TYPES.get(image_format)
        if content_type is None:
            raise UnsupportedMedia(
                f"{image.format} images are not supported. Send JPEG, PNG, WebP or HEIC photos."
            )
        width, height = image.size
        if width * height > max_pixels:
            raise TooManyPixels(_pixel_sentence(max_pixels))
        exif_tiff = _exif_tiff(image)
    with path.open("rb") as reader, mmap.mmap(reader.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if not _is_whole(data, image_format):
            raise CorruptImage()
    if exif_tiff and _has_gps(exif_tiff):
        with path.open("r+b") as writer, mmap.mmap(writer.fileno(), 0) as data:
            _blank_gps(data, exif_tiff)
    return CheckedImage(content_type=content_type, width=width, height=height)


def _is_whole(data: mmap.mmap, image_format: str) -> bool:
    """Whether the file holds its image to the end, judged from markers without decoding: a
    copy cut short (an interrupted card reader, a partial download) is caught at the upload."""
    if image_format in ("JPEG", "MPO"):
        scan = _jpeg_scan_start(data)
        # Entropy-coded data never holds FF D9 (a data FF is followed by 00 or a restart
        # marker), so the end-of-image marker after the first scan ends the primary image.
        # Bytes after it (a phone's motion video) are allowed, as decoders allow them.
        return scan is not None and data.rfind(b"\xff\xd9", scan) >= 0
    if image_format == "PNG":
        first_data = data.find(b"IDAT")
        return 0 < first_data < data.rfind(b"\x00\x00\x00\x00IEND")
    if image_format == "WEBP":
        (riff_bytes,) = struct.unpack_from("<I", data, 4)
        return 8 + int(riff_bytes) <= len(data)
    return _boxes_fit(data)  # HEIF


def _jpeg_scan_start(data: mmap.mmap) -> int | None:
    """Where the primary image's first scan begins: past the segments before it (EXIF and its
    embedded preview included), each skipped by its length."""
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        length = int(struct.unpack_from(">H", data, offset + 2)[0])
        if marker == 0xDA:
            return offset + 2 + length
        offset += 2 + length
    return None


def _boxes_fit(data: mmap.mmap) -> bool:
    """An ISO media file (HEIF): every top-level box lies within the file."""
    offset = 0
    while offset + 8 <= len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        if size == 1 and offset + 16 <= len(data):
            (size,) = struct.unpack_from(">Q", data, offset + 8)
        elif size == 0:  # the last box runs to the end of the file
            return True
        if size < 8:
            return False
        offset += size
    # Fewer than 8 bytes left over are trailing padding, not a box cut short.
    return offset <= len(data)


def _pixel_sentence(max_pixels: int) -> str:
    return (
        f"The photo has more than {max_pixels / 1e6:.0f} megapixels. "
        "Export it at a smaller size and send it again."
    )


def thumbnail_of(
    data: bytes,
    *,
    size_px: int,
    around: tuple[int, int, int, int] | None = None,
    face_share: float = 0.5,
) -> bytes:
    """A JPEG thumbnail of a stored image: a photo's grid thumbnail when its faces are found
    elsewhere (Rekognition), or a square around the face box `around` (in the upright image's
    pixels), the face taking `face_share` of its side. Raises what Pillow raises for broken
    pixels."""
    with Image.open(io.BytesIO(data)) as image:
        stored_width = image.width
        # draft() lets the JPEG decoder scale by 1/2..1/8 while decoding: a 24 MP photo becomes
        # a thumbnail, or a face's square, without ever holding its full-size pixels.
        if around is None:
            image.draft("RGB", (size_px, size_px))
        else:
            # The square needs `size_px` pixels across, not the whole photo's.
            keep = min(1.0, size_px / _square_side(around, face_share))
            image.draft("RGB", (math.ceil(image.width * keep), math.ceil(image.height * keep)))
        image.load()
        scale = image.width / stored_width
        upright = ImageOps.exif_transpose(image)
    if around is not None:
        left, top, right, bottom = (value * scale for value in around)
        # A selfie's square is twice the face (some hair and shoulders); a face cut from an
        # event photo keeps closer, so that it shows little of the people beside it.
        half = round(_square_side(around, face_share) * scale / 2)
        centre_x, centre_y = round((left + right) / 2), round((top + bottom) / 2)
        upright = upright.crop((centre_x - half, centre_y - half, centre_x + half, centre_y + half))
    return encode_thumbnail(upright, size_px)


def _square_side(face: tuple[int, int, int, int], face_share: float) -> float:
    """The side of the square around a face box whose side the face takes `face_share` of."""
    left, top, right, bottom = face
    return max(right - left, bottom - top) / face_share


def encode_thumbnail(upright: Image.Image, size_px: int) -> bytes:
    """The JPEG that grids show of pixels already oriented: at most `size_px` on the longer side.

    Pillow writes no metadata it is not given, so no EXIF, and no GPS, comes along.
    """
    scale = min(1.0, size_px / max(upright.size))
    size = (max(1, round(upright.width * scale)), max(1, round(upright.height * scale)))
    small = to_rgb(upright)
    if small.size != size:
        # A cheap box reduction to 2x the size first, then Lanczos: the same look for far less
        # (a 24 MP photo's thumbnail 0.4 levels of 255 from a Lanczos of every pixel, on
        # average, made in 9 ms where a gap of 3 took 23 ms; docs/BENCHMARKS.md).
        small = small.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=82, optimize=True, progressive=True)
    return out.getvalue()


@functools.cache
def placeholder_thumbnail() -> bytes:
    """What a photo's thumbnail address shows until the photo's job has made the thumbnail: an
    empty tile, so a grid of photos still being processed looks finished."""
    return encode_thumbnail(Image.new("RGB", (16, 16), PLACEHOLDER_RGB), 16)


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


def _blank_gps(data: mmap.mmap, exif_tiff: bytes) -> None:
    """Empty the EXIF GPS directory where it lies in the file, keeping every other byte.

    The file's length and its image data are unchanged: no re-encoding, no offsets to fix.
    """
    start = data.find(exif_tiff[:64])
    if start < 0:
        return
    order = exif_tiff[:2]
    if order not in (b"II", b"MM"):
        return
    endian = "<" if order == b"II" else ">"
    gps_offset = _ifd0_value(exif_tiff, endian, GPS_IFD_TAG)
    if gps_offset is None or gps_offset + 2 > len(exif_tiff):
        return
    (count,) = struct.unpack_from(endian + "H", exif_tiff, gps_offset)
    end = gps_offset + 2 + 12 * count + 4
    if end > len(exif_tiff):
        return
    for index in range(count):
        entry = gps_offset + 2 + 12 * index
        _tag, kind, items, value = struct.unpack_from(endian + "HHII", exif_tiff, entry)
        size = _TYPE_SIZES.get(kind, 1) * items
        if size > 4 and value + size <= len(exif_tiff):
            data[start + value : start + value + size] = bytes(size)
    data[start + gps_offset : start + end] = bytes(end - gps_offset)
    _fix_png_crc(data, start)


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


def _fix_png_crc(data: mmap.mmap, tiff_start: int) -> None:
    """A PNG eXIf chunk carries a CRC over its bytes: recompute it after editing."""
    if data[:4] != b"\x89PNG" or data[tiff_start - 4 : tiff_start] != b"eXIf":
        return
    (length,) = struct.unpack_from(">I", data, tiff_start - 8)
    crc = zlib.crc32(data[tiff_start - 4 : tiff_start + length])
    struct.pack_into(">I", data, tiff_start + length, crc)
