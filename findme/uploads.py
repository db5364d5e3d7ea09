"""Streaming multipart uploads: each file part goes to a temp file, hashed in the same pass."""

from __future__ import annotations

import hashlib
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from findme.errors import BadRequest, TooLarge, UnsupportedMedia

MAX_FILENAME_CHARS = 200
MAX_FIELD_BYTES = 1024
MAX_BOUNDARY_CHARS = 70  # RFC 2046; browsers, curl and httpx use 30 to 50
# A file's bytes reach its temp file in writes of this size: each write is a trip to a thread,
# and the server reads a request in chunks of 64 KB. Receiving an 8.9 MB camera photo took 43 ms
# of CPU with a write per chunk, 18-20 ms with 1 MB writes (26 ms at 256 KB, 21 ms at 4 MB).
WRITE_BYTES = 1 << 20


class RequestTooLarge(TooLarge):
    """The request is too large. Send the photos in several smaller requests."""

    code = "request_too_large"


class MalformedUpload(BadRequest):
    """The upload is not valid multipart/form-data. Send the photos as form fields named files."""

    code = "malformed_upload"


@dataclass
class ReceivedFile:
    """One file part, fully written to `path` (unless it was over the size limit)."""

    filename: str
    path: Path
    size_bytes: int = 0
    sha256: str = ""
    too_large: bool = False
    _hash: Any = field(default_factory=hashlib.sha256, repr=False)


def safe_filename(raw: str) -> str:
    """A display name: no directories, no control characters, bounded length."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = " ".join(name.split()).strip(" .")
    if len(name) > MAX_FILENAME_CHARS:
        _, dot, extension = name.rpartition(".")
        keep = extension[:10] if dot else ""
        name = name[: MAX_FILENAME_CHARS - len(keep) - 1] + ("." + keep if keep else "")
    return name or "photo"


class _PartEvents:
    """Collects the parser's synchronous callbacks so the async side can act on them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": lambda: self.events.append(("end", None)),
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
        }

    def _begin(self) -> None:
        self._disposition = b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", data[start:end]))

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        filename = options.get(b"filename")
        if filename is None:
            field_name = options.get(b"name", b"").decode("utf-8", "replace")
            self.events.append(("field", field_name))
        else:
            self.events.append(("begin", filename.decode("utf-8", "replace")))


async def receive_files(
    request: Request,
    *,
    tmp_dir: Path,
    max_file_bytes: int,
    max_request_bytes: int,
    max_files: int,
    fields: dict[str, str] | None = None,
) -> AsyncIterator[ReceivedFile]:
    """Yield each file part of a multipart request once it is completely on disk.

    Files over `max_file_bytes` are drained without being kept (`too_large`); a request over
    `max_request_bytes` or with more than `max_files` files fails as a whole. Short text fields
    are collected into `fields`. The caller owns the yielded files' paths and must delete them.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise UnsupportedMedia(
            "Send the photos as multipart/form-data, one form field named files per photo."
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedUpload("The multipart request has no boundary.")
    if len(boundary) > MAX_BOUNDARY_CHARS:
        raise MalformedUpload(
            f"The multipart boundary is too long: at most {MAX_BOUNDARY_CHARS} characters."
        )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_request_bytes:
        raise RequestTooLarge()

    events = _PartEvents()
    try:
        parser = MultipartParser(boundary, events.callbacks())  # type: ignore[arg-type]
    except Exception as error:
        raise MalformedUpload("The multipart boundary is not valid.") from error
    tmp_dir.mkdir(parents=True, exist_ok=True)
    current: ReceivedFile | None = None
    field: tuple[str, bytearray] | None = None
    sink: Any = None
    unwritten = bytearray()
    received_bytes = 0
    files = 0
    try:
        async for chunk in request.stream():
            received_bytes += len(chunk)
            if received_bytes > max_request_bytes:
                raise RequestTooLarge()
            try:
                parser.write(chunk)
            except Exception as error:
                raise MalformedUpload() from error
            for kind, value in events.events:
                if kind == "field":
                    field = (value, bytearray())
                elif kind == "data" and field is not None:
                    if len(field[1]) + len(value) > MAX_FIELD_BYTES:
                        raise MalformedUpload(f"The form field {field[0]!r} is too long.")
                    field[1].extend(value)
                elif kind == "end" and field is not None:
                    if fields is not None:
                        fields[field[0]] = field[1].decode("utf-8", "replace")
                    field = None
                elif kind == "begin":
                    files += 1
                    if files > max_files:
                        raise BadRequest(
                            f"At most {max_files} files can be sent in one request. "
                            "Send the rest in another request."
                        )
                    fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".upload")
                    current = ReceivedFile(filename=safe_filename(value), path=Path(name))
                    sink = await aiofiles.open(fd, "wb")
                elif kind == "data" and current is not None and sink is not None:
                    current.size_bytes += len(value)
                    if current.size_bytes > max_file_bytes:
                        current.too_large = True
                    if not current.too_large:
                        current._hash.update(value)
                        unwritten += value
                        if len(unwritten) >= WRITE_BYTES:
                            await sink.write(unwritten)
                            unwritten.clear()
                    else:
                        unwritten.clear()
                elif kind == "end" and current is not None and sink is not None:
                    await sink.write(unwritten)
                    unwritten.clear()
                    await sink.close()
                    sink = None
                    current.sha256 = current._hash.hexdigest()
                    done, current = current, None
                    yield done
            events.events.clear()
        try:
            parser.finalize()
        except Exception as error:
            raise MalformedUpload() from error
        if current is not None:
            raise MalformedUpload("The multipart request ended in the middle of a file.")
    except ClientDisconnect:
        raise MalformedUpload("The upload was interrupted before it finished.") from None
    finally:
        if sink is not None:
            await sink.close()
        if current is not None:
            await remove_file(current.path)


async def remove_file(path: Path) -> None:
    """Remove a file that may be gone already."""
    try:
        await aiofiles.os.remove(path)
    except FileNotFoundError:
        pass
