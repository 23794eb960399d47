"""The web server's edge, on a real `quorra web` (gunicorn, Quorra's worker class): slow
clients, a full request queue, refused requests with large bodies, pipelining and
100-continue. Properties only, with generous deadlines; the figures are in
bench/slow_clients.py and bench/overload.py."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pytest
import requests
from sqlalchemy import text

from quorra.db import make_engine
from tests.api.test_server import AUTH, quorra, web_env
from tests.conftest import free_port

THREADS = 2
MAX_PAYLOAD_BYTES = 64 * 1024  # so the largest body a route takes (a batch) is 640 KiB
DEADLINE_SECONDS = 30
START_SECONDS = 120  # gunicorn boots slowly on a machine at a load average of 30


def start_web(database_url: str, **extra: str):
    port = free_port()
    settings = {
        "QUORRA_WEB_WORKERS": "1",
        "QUORRA_WEB_THREADS": str(THREADS),
        "QUORRA_WEB_HEADER_TIMEOUT": "2",
        "QUORRA_WEB_BODY_TIMEOUT": "2",
        "QUORRA_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD_BYTES),
        "QUORRA_LOG_LEVEL": "warning",  # stderr is a pipe nobody reads until the end: no line per request
    }
    env = web_env(database_url, port, **(settings | extra))
    process = quorra("web", env=env)
    base = f"http://127.0.0.1:{port}"
    wait_until_healthy(base, process)
    return base, port, process


def wait_until_healthy(base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"quorra web exited early: {process.communicate()[1].decode()[-3000:]}")
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"quorra web did not become healthy in {START_SECONDS} s")


def stop_web(process) -> None:
    process.terminate()
    try:
        process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def web(sqlite_template, tmp_path_factory):
    path = tmp_path_factory.mktemp("edge") / "quorra.db"
    path.write_bytes(sqlite_template.read_bytes())
    base, port, process = start_web(f"sqlite:///{path}")
    yield base, port
    stop_web(process)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_SECONDS)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (all of Quorra's are), and not a byte of
    the next one: the head is read byte by byte, the body to its exact length."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"closed after {head!r}")
        head += byte
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:] if line)}
    body = b""
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(int(headers["content-length"]) - len(body))
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# -- slow clients (issue 8 item 2) --------------------------------------------------------------


def open_slow_sockets(port: int, count: int) -> list[socket.socket]:
    """Half stop in the middle of the head, half in the middle of the body."""
    sockets = []
    for index in range(count):
        sock = connect(port)
        if index % 2:
            head = f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {AUTH['X-API-Key']}\r\n"
            sock.sendall(f"{head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{".encode())
        else:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        sockets.append(sock)
    return sockets


def test_slow_clients_do_not_hold_the_request_threads(web):
    base, port = web
    slow = open_slow_sockets(port, 10 * THREADS)
    try:
        time.sleep(0.5)
        created = requests.post(f"{base}/v1/jobs", json={"type": "t", "payload": {}}, headers=AUTH, timeout=10)
        fetched = requests.get(f"{base}/v1/jobs/{created.json()['id']}", headers=AUTH, timeout=10)
    finally:
        for sock in slow:
            sock.close()

    assert created.status_code == 201
    assert fetched.status_code == 200


def test_a_request_head_not_finished_in_time_is_answered_408_and_closed(web):
    _, port = web
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        status, headers, _ = read_response(sock)  # the header timeout is 2 s; recv waits up to 30

        assert status == 408
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_body_not_finished_in_time_is_answered_408_and_closed(web):
    _, port = web
    with connect(port) as sock:
        head = f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {AUTH['X-API-Key']}\r\n"
        sock.sendall(f"{head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{".encode())

        status, _, body = read_response(sock)

        assert status == 408
        assert json.loads(body)["error"]["message"]
        assert closed_by_server(sock)


def test_an_idle_connection_that_never_speaks_is_closed(web):
    _, port = web
    with connect(port) as sock:
        assert closed_by_server(sock)


# -- refused requests with large bodies (issue 8 item 16) -----------------------------------------


def refusals(base: str) -> list[tuple[str, str, dict[str, str], bytes, int]]:
    """Requests refused before their body is read, each with more than 64 KiB of body."""
    body = b'{"type": "t", "payload": {"pad": "' + b"x" * 300_000 + b'"}}'
    json_type = {"Content-Type": "application/json"}
    return [
        ("POST", f"{base}/v1/jobs", {**json_type, "X-API-Key": "wrong"}, body, 401),
        ("POST", f"{base}/v1/jobs", {**AUTH, "Content-Type": "text/plain"}, body, 415),
        ("POST", f"{base}/v1/jobs", {**AUTH, **json_type}, body, 413),  # over the 64 KiB limit
        ("POST", f"{base}/v1/nowhere", {**AUTH, **json_type}, body, 404),
        ("POST", f"{base}/v1/jobs/batch", {**AUTH, **json_type}, body * 3, 413),  # over what is buffered
    ]


def test_a_session_keeps_working_after_refused_requests_with_large_bodies(web):
    base, _ = web
    with requests.Session() as session:
        for _ in range(4):
            for method, url, headers, body, status in refusals(base):
                refused = session.request(method, url, headers=headers, data=body, timeout=DEADLINE_SECONDS)
                after = session.get(f"{base}/healthz", timeout=DEADLINE_SECONDS)

                assert refused.status_code == status
                assert after.status_code == 200


@pytest.mark.parametrize("index", range(5))
def test_a_refused_large_body_either_closes_or_leaves_a_working_connection(web, index):
    base, port = web
    method, url, headers, body, status = refusals(base)[index]
    path = url.removeprefix(base)
    with connect(port) as sock:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = f"{method} {path} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n\r\n"
        sender = threading.Thread(target=send_quietly, args=(sock, request.encode() + body))
        sender.start()
        refused_status, refused_headers, _ = read_response(sock)
        sender.join()

        assert refused_status == status
        if refused_headers["connection"] == "close":
            assert closed_by_server(sock)
        else:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 200


def send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server answered and closed before taking all of a body it refused


# -- HTTP/1.1 details the buffering must keep -------------------------------------------------------


def test_pipelined_requests_are_all_answered_in_order(web):
    _, port = web
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")

        assert read_response(sock)[0] == 200
        assert read_response(sock)[0] in (401, 404)


def test_expect_100_continue_gets_one_interim_response_then_the_answer(web):
    _, port = web
    body = json.dumps({"type": "t", "payload": {"n": 1}}).encode()
    with connect(port) as sock:
        head = f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {AUTH['X-API-Key']}\r\nExpect: 100-continue\r\n"
        sock.sendall(f"{head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        interim = sock.recv(64)
        sock.sendall(body)
        status, _, answer = read_response(sock)

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert status == 201 and json.loads(answer)["status"] == "pending"


def test_a_chunked_body_is_read_in_full(web):
    base, _ = web

    def chunks():
        yield b'{"type": "t", '
        yield b'"payload": {"pad": "' + b"y" * 20_000 + b'"}}'

    created = requests.post(f"{base}/v1/jobs", data=chunks(), headers={**AUTH, "Content-Type": "application/json"})

    fetched = requests.get(f"{base}/v1/jobs/{created.json()['id']}", headers=AUTH)
    assert created.status_code == 201
    assert fetched.json()["payload"] == {"pad": "y" * 20_000}


# -- overload (issue 8 item 3) ---------------------------------------------------------------------


@pytest.fixture
def web_with_a_one_request_queue(postgres_url):
    """One thread and no queue beyond it; a PostgreSQL lock holds that thread on demand."""
    base, _, process = start_web(postgres_url, QUORRA_WEB_THREADS="1", QUORRA_WEB_QUEUE="0")
    yield base, postgres_url
    stop_web(process)


def test_a_request_that_finds_the_queue_full_is_refused_503_at_once_and_service_resumes(web_with_a_one_request_queue):
    base, database_url = web_with_a_one_request_queue
    job_id = requests.post(f"{base}/v1/jobs", json={"type": "t", "payload": {}}, headers=AUTH).json()["id"]
    engine = make_engine(database_url)
    held: dict[str, requests.Response] = {}
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))
            holder = threading.Thread(target=lambda: held.update(r=get_job(base, job_id)))
            holder.start()
            wait_for_lock_waiter(conn)  # the only request thread now waits on the lock

            refused = get_job(base, job_id)
        holder.join(DEADLINE_SECONDS)
        after = get_job(base, job_id)
    finally:
        engine.dispose()

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "unavailable"
    assert held["r"].status_code == 200
    assert after.status_code == 200


def get_job(base: str, job_id: str) -> requests.Response:
    return requests.get(f"{base}/v1/jobs/{job_id}", headers=AUTH, timeout=DEADLINE_SECONDS)


def wait_for_lock_waiter(conn) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    query = text("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'jobs'::regclass")
    while conn.execute(query).scalar() == 0:
        assert time.monotonic() < deadline, "the request never reached the database"
        time.sleep(0.05)


# -- the connection cap ----------------------------------------------------------------------------


@pytest.fixture
def web_with_four_connections(sqlite_url):
    """Four connections per worker; idle keep-alive and unfinished heads would wait a minute."""
    slow = {"QUORRA_WEB_HEADER_TIMEOUT": "60", "QUORRA_WEB_KEEPALIVE": "60"}
    base, port, process = start_web(sqlite_url, QUORRA_WEB_THREADS="1", QUORRA_WEB_MAX_CONNECTIONS="4", **slow)
    yield base, port
    stop_web(process)


def test_at_the_connection_cap_an_idle_keep_alive_connection_gives_way_to_a_new_client(web_with_four_connections):
    base, port = web_with_four_connections
    idle = [connect(port) for _ in range(3)]
    for sock in idle:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200  # now idle, kept alive
    silent = connect(port)  # the fourth connection: never finishes a request
    silent.sendall(b"GET /healthz HTTP/1.1\r\n")
    try:
        answered = requests.get(f"{base}/healthz", timeout=DEADLINE_SECONDS)

        assert answered.status_code == 200
        assert closed_by_server(idle[0])  # the oldest idle one made room
    finally:
        for sock in [*idle, silent]:
            sock.close()
