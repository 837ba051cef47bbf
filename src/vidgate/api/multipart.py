"""Incremental multipart/form-data parsing as a stream of events.

python-multipart (the parser Starlette uses) calls back synchronously as bytes are fed;
this adapter turns those callbacks into a list of events per fed piece, so the async upload
route can await the storage of each piece. Nothing is buffered beyond the fed piece.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from vidgate.errors import MalformedMultipart


@dataclass(frozen=True)
class PartStart:
    name: str
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class PartData:
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


class MultipartEvents:
    def __init__(self, content_type: str) -> None:
        kind, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise MalformedMultipart("Send the upload as multipart/form-data with a 'file' part.")
        self._events: list[Event] = []
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self.complete = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``; return the events it completed."""
        try:
            self._parser.write(data)
        except MultipartParseError as exc:
            raise MalformedMultipart(f"The multipart body could not be parsed: {exc}.") from exc
        events, self._events = self._events, []
        return events

    # python-multipart callbacks
    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        content_type = self._headers.get(b"content-type")
        self._events.append(
            PartStart(
                name=name,
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                content_type=content_type.decode("latin-1") if content_type else None,
            )
        )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(PartData(bytes(data[start:end])))

    def _part_end(self) -> None:
        self._events.append(PartEnd())

    def _end(self) -> None:
        self.complete = True
