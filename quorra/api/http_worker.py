"""Quorra's gunicorn worker: gthread, with the request read in the event loop.

gunicorn's gthread worker hands a connection to a request thread as soon as it has any
data, and the thread then reads the head and the body itself. A client that sends one
byte every few seconds holds that thread for as long as it likes, so a handful of slow
sockets takes the API down. This worker does what nginx does in front of an app server:
its event loop reads and buffers the whole request (head and body, up to the largest body
the API accepts) without a thread, with a deadline for the head and one for the body, and
only a complete request goes to the thread pool. On top of that it bounds the work:

* a request that finds the thread pool and its queue full is refused at once with a 503
  and ``Retry-After`` (the loop answers it; no thread is involved), and so is a body
  that would take the worker past its buffer budget;
* at the connection cap, the oldest idle keep-alive connection is closed to make room
  for a new client before the worker stops accepting;
* a connection is closed without blocking the loop (a lingering close: the write side is
  shut, the rest of the client's data discarded until it closes or a deadline passes);
* a request whose body was not read in full is answered ``Connection: close``, and a
  fully buffered body the application did not read is discarded from the buffer, so the
  connection stays usable for the next request (gthread alone drains at most 64 KiB and
  then closes a connection it announced as keep-alive).

Plain HTTP/1.1 only: TLS and HTTP/2 belong to the reverse proxy in front.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.gthread import TConn, ThreadWorker

from quorra.api.http_framing import ChunkedScanner, RequestHead
from quorra.api.http_response import OneSendResponse

logger = logging.getLogger(__name__)

RECV_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
LINGER_SECONDS = 2.0
RETRY_AFTER_SECONDS = 1
REPORT_SECONDS = 10.0


@dataclass(frozen=True)
class WebLimits:
    """The knobs (quorra.config: QUORRA_WEB_*); per worker process."""

    header_timeout: float  # accept (or first byte after keep-alive) -> complete head
    body_timeout: float  # complete head -> complete body; also each socket wait of a request thread
    max_body_bytes: int  # the largest body any route accepts; bigger ones are not buffered
    buffer_bytes: int  # all request bytes held by the loop at once
    queue: int  # complete requests waiting for a thread, beyond those being served


def canned_response(status: str, message: str, retry_after: int | None = None) -> bytes:
    code = status.split(" ", 1)[0]
    body = f'{{"error": {{"code": "{_ERROR_CODES[code]}", "message": "{message}", "details": null}}}}'.encode()
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_ERROR_CODES = {"400": "invalid_argument", "408": "request_timeout", "431": "invalid_argument", "503": "unavailable"}
BAD_REQUEST = canned_response("400 Bad Request", "malformed request head")
HEAD_TOO_LARGE = canned_response("431 Request Header Fields Too Large", "the request head is too large")
TIMED_OUT = canned_response("408 Request Timeout", "the request was not received in time")
BUSY = canned_response("503 Service Unavailable", "the server is busy; retry later", RETRY_AFTER_SECONDS)


class BufferedConn(TConn):
    """A connection whose request the event loop reads before any thread sees it."""

    def __init__(self, cfg, sock, client, server, limits: WebLimits):
        super().__init__(cfg, sock, client, server)
        self.limits = limits
        self.buffer = bytearray()
        self.head: RequestHead | None = None
        self.chunks: ChunkedScanner | None = None
        self.deadline = 0.0
        self.body_buffered = True  # False: handed over before its body was read in full
        self.continue_sent = False
        self.polled = False  # registered with the poller while the loop reads its request

    def init(self):
        # Called by ThreadWorker.handle in the request thread, right after it made the
        # socket blocking: every wait of the thread is bounded instead.
        self.initialized = True
        self.sock.settimeout(self.limits.body_timeout)

    def reset_for_next_request(self, deadline: float) -> None:
        self.buffer = bytearray(self.parser.unreader.take_buffered()) if self.parser else bytearray()
        self.head = None
        self.chunks = None
        self.deadline = deadline
        self.body_buffered = True
        self.continue_sent = False
        self.admitted = False


class FrozenConfig:
    """gunicorn's Config, each setting looked up once: Config.__getattr__ costs a dict
    lookup and a validation per read, and its parser reads a dozen settings per request
    (8 % of a worker's CPU on GET /v1/jobs/{id}). A worker never changes its settings."""

    def __init__(self, cfg):
        self._cfg = cfg

    def __getattr__(self, name: str):
        value = getattr(self._cfg, name)
        setattr(self, name, value)
        return value


class BufferingWorker(ThreadWorker):
    """gthread with request reading in the event loop; see the module docstring."""

    limits: WebLimits  # set by worker_class()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reading: set[BufferedConn] = set()
        self.lingering: dict[socket.socket, float] = {}
        self.in_flight = 0  # requests given to the thread pool and not finished
        self.buffered_bytes = 0
        self.refused = 0
        self.next_report = 0.0

    def init_process(self):
        self.cfg = FrozenConfig(self.cfg)
        super().init_process()

    def handle_exit(self, sig, frame):
        """SIGTERM: also end the app's long polls (an attribute assignment, safe in a signal
        handler), so that they answer within the grace instead of being cut at its end."""
        super().handle_exit(sig, frame)
        stop_long_polls = getattr(getattr(self, "wsgi", None), "stop_long_polls", None)
        if stop_long_polls is not None:
            stop_long_polls()

    @classmethod
    def check_config(cls, cfg, log):
        super().check_config(cfg, log)
        if cfg.is_ssl or cfg.http2_cleartext != "off":
            raise RuntimeError("quorra web serves plain HTTP/1.1; terminate TLS and HTTP/2 in a reverse proxy")

    # -- accepting ---------------------------------------------------------------------

    def accept(self, listener):
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = BufferedConn(self.cfg, client_sock, client_addr, listener.getsockname(), self.limits)
        conn.parser = None
        self.start_reading(conn, time.monotonic() + self.limits.header_timeout)

    def set_accept_enabled(self, enabled):
        # At the connection cap, an idle keep-alive connection gives way to a new client.
        if not enabled and self.alive and self._close_oldest_idle():
            return
        super().set_accept_enabled(enabled)

    def _close_oldest_idle(self) -> bool:
        if not self.keepalived_conns:
            return False
        conn = self.keepalived_conns.popleft()
        self._forget(conn.sock)
        self.nr_conns -= 1
        conn.close()
        return True

    # -- reading a request in the loop -------------------------------------------------

    def enqueue_req(self, conn):
        """gthread calls this for a kept-alive connection that became readable and for
        bytes of a pipelined request already read: read the request here first."""
        self.start_reading(conn, time.monotonic() + self.limits.header_timeout)

    def start_reading(self, conn: BufferedConn, deadline: float) -> None:
        conn.reset_for_next_request(deadline)
        self.reading.add(conn)
        if conn.buffer:
            self._advance(conn)
        else:
            self.on_request_readable(conn, conn.sock)  # the data often arrived with the connection
        if conn in self.reading and not conn.polled:  # still incomplete: wait for more in the poller
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_request_readable, conn))
            conn.polled = True

    def on_request_readable(self, conn: BufferedConn, _sock) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.buffer += data
        self.buffered_bytes += len(data)
        self._advance(conn)

    def _advance(self, conn: BufferedConn) -> None:
        if conn.head is None and not self._read_head(conn):
            return
        if conn.head is not None and self._body_complete(conn):
            self._dispatch(conn)

    def _read_head(self, conn: BufferedConn) -> bool:
        end = conn.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.buffer) > MAX_HEAD_BYTES:
                self._answer_and_close(conn, HEAD_TOO_LARGE)
            elif b"\n\n" in conn.buffer:
                self._answer_and_close(conn, BAD_REQUEST)  # bare LF line ends, which gunicorn refuses
            return False
        conn.head = RequestHead.parse(bytes(conn.buffer[: end + 4]))
        conn.deadline = time.monotonic() + self.limits.body_timeout
        return True

    def _body_complete(self, conn: BufferedConn) -> bool:
        head = conn.head
        if head.ambiguous:
            conn.body_buffered = False  # gunicorn's parser refuses it with a 400
            return True
        if head.content_length is not None:
            return self._fixed_body_complete(conn, head.content_length)
        if head.chunked:
            return self._chunked_body_complete(conn)
        return True

    def _fixed_body_complete(self, conn: BufferedConn, length: int) -> bool:
        if length > self.limits.max_body_bytes:
            conn.body_buffered = False  # the application refuses it from Content-Length
            return True
        if len(conn.buffer) - conn.head.size >= length:
            return True
        if not conn.admitted:
            if self._over_budget(length):
                self._refuse(conn)  # held memory is bounded: this body waits for another turn
                return False
            conn.admitted = True
        self._send_continue(conn)
        return False

    def _chunked_body_complete(self, conn: BufferedConn) -> bool:
        if conn.chunks is None:
            conn.chunks = ChunkedScanner(conn.head.size)
        if len(conn.buffer) - conn.head.size > self.limits.max_body_bytes:
            conn.body_buffered = False  # the application stops reading at its limit
            return True
        if self._over_budget(0):
            self._refuse(conn)
            return False
        if conn.chunks.complete(conn.buffer):
            return True
        if conn.chunks.malformed:
            conn.body_buffered = False
            return True
        self._send_continue(conn)
        return False

    def _over_budget(self, more: int) -> bool:
        return self.buffered_bytes + more > self.limits.buffer_bytes

    def _send_continue(self, conn: BufferedConn) -> None:
        if conn.head.expects_continue and not conn.continue_sent:
            conn.continue_sent = True
            self._send(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- handing a complete request to a thread ----------------------------------------

    def _dispatch(self, conn: BufferedConn) -> None:
        self.reading.discard(conn)
        self._stop_polling(conn)
        if self.in_flight >= self.cfg.threads + self.limits.queue:
            # Requests finished since this loop turn began free their places first: a client
            # that got its answer and asks again at once must not find its own request counted.
            self.method_queue.run_callbacks(None)
        if self.in_flight >= self.cfg.threads + self.limits.queue:
            self._refuse(conn)
            return
        conn.parser = conn.parser or self._new_parser(conn)
        conn.parser.unreader.unread(bytes(conn.buffer))
        self._release(conn)
        self.in_flight += 1
        super().enqueue_req(conn)

    def _new_parser(self, conn: BufferedConn):
        from gunicorn import http

        return http.get_parser(self.cfg, conn.sock, conn.client)

    def handle(self, conn):
        conn.data_ready = True  # read in the loop already: no waiting in the thread
        return super().handle(conn)

    def handle_request(self, req, conn):
        if not conn.body_buffered:
            req.must_close = True  # the rest of the body is still on the socket
        if conn.continue_sent:
            req._expected_100_continue = False  # the loop sent it
        return self._serve(req, conn)

    def _serve(self, req, conn) -> bool:
        """gthread's handle_request (HTTP/1.1 only), with OneSendResponse: the head leaves
        with the body in one send. True: the connection may serve another request."""
        environ, resp = {}, None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg, OneSendResponse)
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                resp.force_close()
            if not self.alive or not self.cfg.keepalive or len(self.keepalived_conns) >= self.max_keepalived:
                resp.force_close()
            self._respond(resp, environ, req, request_start)
            return not resp.should_close()
        except OSError:
            raise  # the connection is gone: handle() tells the kinds apart
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:
                # A response already begun cannot become a 500: close the connection.
                self.log.exception("Error handling request")
                util.close_graceful(conn.sock)
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")

    def _respond(self, resp, environ, req, request_start) -> None:
        respiter = self.wsgi(environ, resp.start_response)
        try:
            if isinstance(respiter, environ["wsgi.file_wrapper"]):
                resp.write_file(respiter)
            else:
                for item in respiter:
                    resp.write(item)
            resp.close()
        finally:
            self.log.access(resp, req, environ, datetime.now() - request_start)
            if hasattr(respiter, "close"):
                respiter.close()

    def _keepalive_after(self, conn, keepalive):
        if not keepalive or not conn.body_buffered:
            return False
        # The body is in memory: discard what the application left, however much.
        return bool(conn.parser.finish_body(deadline=time.monotonic() + 1.0, max_bytes=sys.maxsize))

    def finish_request(self, conn, fs):
        self.in_flight -= 1
        if fs.cancelled() or fs.exception() is not None or not fs.result():
            self.nr_conns -= 1
            self._linger(conn.sock)
            return
        super().finish_request(conn, fs)

    # -- refusing and closing without blocking the loop --------------------------------

    def _refuse(self, conn: BufferedConn) -> None:
        self.refused += 1
        self._answer_and_close(conn, BUSY)

    def _answer_and_close(self, conn: BufferedConn, response: bytes) -> None:
        self._send(conn.sock, response)
        self._drop(conn)

    def _drop(self, conn: BufferedConn) -> None:
        self.reading.discard(conn)
        self._stop_polling(conn)
        self._release(conn)
        self.nr_conns -= 1
        self._linger(conn.sock)

    def _release(self, conn: BufferedConn) -> None:
        self.buffered_bytes -= len(conn.buffer)
        conn.buffer = bytearray()

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> None:
        try:
            sock.send(data)  # small; a socket that cannot take it now gets nothing
        except OSError:
            pass

    def _stop_polling(self, conn: BufferedConn) -> None:
        if conn.polled:
            self._forget(conn.sock)
            conn.polled = False

    def _forget(self, sock: socket.socket) -> None:
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass

    def _linger(self, sock: socket.socket) -> None:
        """Shut the write side and discard what the client still sends until it closes
        (or LINGER_SECONDS pass), so the answer is not cut off by a reset."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, selectors.EVENT_READ, self._on_lingering_readable)
        except (OSError, ValueError, KeyError):
            sock.close()
            return
        self.lingering[sock] = time.monotonic() + LINGER_SECONDS

    def _on_lingering_readable(self, sock: socket.socket) -> None:
        try:
            if sock.recv(RECV_BYTES):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close_lingering(sock)

    def _close_lingering(self, sock: socket.socket) -> None:
        self.lingering.pop(sock, None)
        self._forget(sock)
        sock.close()

    # -- deadlines, run once per loop turn ---------------------------------------------

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.reading if c.deadline <= now or (not self.alive and not c.buffer)]:
            self._answer_and_close(conn, TIMED_OUT if conn.buffer else b"")
        for sock in [s for s, deadline in self.lingering.items() if deadline <= now]:
            self._close_lingering(sock)
        self._report_refusals()

    def _report_refusals(self) -> None:
        """One warning per REPORT_SECONDS at most, with the count, not one per refusal."""
        now = time.monotonic()
        if self.refused and now >= self.next_report:
            logger.warning("requests refused: server busy", extra={"event": "http.busy", "refused": self.refused})
            self.refused = 0
            self.next_report = now + REPORT_SECONDS


def worker_class(limits: WebLimits) -> type[BufferingWorker]:
    """The worker class gunicorn forks, with these limits."""
    return type("QuorraWorker", (BufferingWorker,), {"limits": limits, "__module__": __name__})
