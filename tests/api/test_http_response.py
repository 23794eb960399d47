"""The web worker's response (quorra.api.http_response): the head leaves with the body in one
send; a response without a body, and a chunked one, still send their head, then their
chunks; the Date header is the current second's."""

from __future__ import annotations

import email.utils
import time

import pytest
from gunicorn.config import Config
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader

from quorra.api.http_response import OneSendResponse, http_date


class RecordingSocket:
    def __init__(self):
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def respond(method: str, status: str, headers: list[tuple[str, str]], chunks: list[bytes]) -> list[bytes]:
    """What the socket was given, send by send, for one response."""
    request = Request(Config(), IterUnreader([f"{method} /x HTTP/1.1\r\nHost: h\r\n\r\n".encode()]), ("127.0.0.1", 1))
    sock = RecordingSocket()
    response = OneSendResponse(request, sock, Config())
    response.start_response(status, headers)
    for chunk in chunks:
        response.write(chunk)
    response.close()
    return sock.sent


def test_the_head_and_the_body_leave_in_one_send():
    sent = respond("GET", "200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")], [b"{}"])

    assert len(sent) == 1
    head, body = sent[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nContent-Length: 2" in head
    assert body == b"{}"


@pytest.mark.parametrize(("method", "status"), [("HEAD", "200 OK"), ("GET", "204 No Content")])
def test_a_response_without_a_body_still_sends_its_head(method, status):
    sent = respond(method, status, [("Content-Length", "2")] if method == "HEAD" else [], [b"{}"])

    assert len(sent) == 1 and sent[0].endswith(b"\r\n\r\n")
    assert sent[0].startswith(f"HTTP/1.1 {status}\r\n".encode())


def test_a_chunked_response_sends_its_head_then_its_chunks():
    sent = respond("GET", "200 OK", [("Content-Type", "text/plain")], [b"ab", b"cd"])

    assert b"\r\nTransfer-Encoding: chunked\r\n" in sent[0] and sent[0].endswith(b"\r\n\r\n")
    assert b"".join(sent[1:]) == b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"


def test_the_date_is_the_current_seconds():
    before = int(time.time())
    date = http_date()

    assert email.utils.parsedate_to_datetime(date).timestamp() in {before, before + 1}
    assert date == email.utils.formatdate(email.utils.parsedate_to_datetime(date).timestamp(), usegmt=True)
