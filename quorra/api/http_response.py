"""gunicorn's HTTP/1.1 response, with the head sent in the same piece as the body.

gunicorn sends a response's head (status line and headers) in one ``sendall`` and its body in
another: two system calls per response, each of which lets go of the GIL, and two segments the
client has to wake up for. ``OneSendResponse`` keeps the head back until the first piece of
the body and sends them together; a response that has no body (HEAD, 204, 304), a chunked one
and a file sent with ``sendfile`` send the head on its own, as before. The Date header is
formatted once a second instead of once a response (``email.utils.formatdate`` was 4 % of a
``GET /v1/jobs/{id}``'s CPU in the web worker).
"""

from __future__ import annotations

import threading
import time

from gunicorn import util
from gunicorn.http import wsgi


class _HttpDate:
    """The IMF-fixdate of the current second, formatted when the second changes."""

    def __init__(self):
        self._second = -1
        self._text = ""
        self._lock = threading.Lock()

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            with self._lock:
                self._text, self._second = util.http_date(second), second
        return self._text


http_date = _HttpDate()


class OneSendResponse(wsgi.Response):
    def __init__(self, req, sock, cfg):
        super().__init__(req, sock, cfg)
        self._coalescing = False
        self._head = b""

    def default_headers(self) -> list[str]:
        """gunicorn's own, with the Date of the current second formatted once."""
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        headers = [
            f"HTTP/{self.req.version[0]}.{self.req.version[1]} {self.status}\r\n",
            f"Server: {self.version}\r\n",
            f"Date: {http_date()}\r\n",
            f"Connection: {connection}\r\n",
        ]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        head = ("".join(lines) + "\r\n").encode("latin-1")
        self.headers_sent = True
        if self._coalescing and not self.chunked:
            self._head = head  # _emit_body sends it with the body
        else:
            util.write(self.sock, head)

    def write(self, arg) -> None:
        self._coalescing = True
        try:
            super().write(arg)
        finally:
            self._coalescing = False
        self._send_held_head()  # a write that sent no body bytes (omitted, or past the length)

    def _emit_body(self, data: bytes) -> None:
        if self._head:
            data, self._head = self._head + data, b""
        super()._emit_body(data)

    def _send_held_head(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            util.write(self.sock, head)
