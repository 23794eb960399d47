"""Where an HTTP/1.1 request ends, for the event loop that buffers it (http_worker).

Only framing is decided here: how long the head is, whether a body follows and how it is
delimited. Everything else (the request line, header syntax, limits) stays gunicorn's job:
a head this module cannot frame with certainty is marked ``ambiguous`` and handed over as
it is, and gunicorn's parser answers it with a 400."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIGITS = re.compile(rb"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\r\n]*)?")
MAX_CHUNK_LINE = 4096


@dataclass(frozen=True)
class RequestHead:
    size: int  # bytes up to and including the blank line
    content_length: int | None
    chunked: bool
    expects_continue: bool
    ambiguous: bool  # conflicting or unparsable framing: let gunicorn refuse it

    @classmethod
    def parse(cls, head: bytes) -> RequestHead:
        fields: dict[bytes, list[bytes]] = {}
        for line in head.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if colon:
                fields.setdefault(name.strip().lower(), []).append(value.strip())
        lengths = fields.get(b"content-length", [])
        encodings = fields.get(b"transfer-encoding", [])
        expect = [v.lower() for v in fields.get(b"expect", [])]
        chunked = [v.lower() for v in encodings] == [b"chunked"]
        ambiguous = bool(encodings) and (bool(lengths) or not chunked)
        ambiguous = ambiguous or len(lengths) > 1 or any(not _DIGITS.fullmatch(v) for v in lengths)
        length = int(lengths[0]) if lengths and not ambiguous else None
        return cls(len(head), length, chunked and not ambiguous, b"100-continue" in expect, ambiguous)


class ChunkedScanner:
    """Follows a chunked body through a growing buffer, remembering where it stopped."""

    def __init__(self, start: int):
        self.position = start  # the start of the next chunk-size line
        self.in_trailer = False
        self.malformed = False

    def complete(self, buffer: bytearray) -> bool:
        while not self.malformed:
            end = buffer.find(b"\r\n", self.position)
            if end < 0:
                self.malformed = len(buffer) - self.position > MAX_CHUNK_LINE
                return False
            line = bytes(buffer[self.position : end])
            if self.in_trailer:
                self.position = end + 2
                if not line:
                    return True
                continue
            if not self._skip_chunk(line, end, len(buffer)):
                return False
        return False

    def _skip_chunk(self, line: bytes, line_end: int, available: int) -> bool:
        """Steps over one chunk when it is all there; False when more data is needed."""
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            self.malformed = True
            return False
        size = int(match.group(1), 16)
        if size == 0:
            self.position = line_end + 2
            self.in_trailer = True
            return True
        chunk_end = line_end + 2 + size + 2
        if available < chunk_end:
            return False
        self.position = chunk_end
        return True
