"""Shutdown drains before it stops: new leases are refused and long polls end at once, but
acks, nacks and extends are served until every lease the server delivered is settled (a
worker stopping at the same moment settles its jobs), and connections that carry no call
(idle, or a TCP probe that never speaks HTTP/2) do not hold the exit."""

from __future__ import annotations

import signal
import socket
import threading
import time
from concurrent import futures

import grpc
import pytest

from quorra.rpc.capacity import CallGate
from quorra.rpc.servicer import SERVICE_NAME
from tests import factories
from tests.conftest import free_port
from tests.rpc.support import ack, extend, lease, nack, refusal, rpc_settings, running_server, stub_on
from tests.rpc.test_process import start_grpc, wait_serving

C = grpc.StatusCode
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS_FRAME = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def test_a_stopping_server_serves_settles_until_its_leases_are_settled(settings, store, notifier):
    # Given a worker holding two leases from the server
    for _ in range(2):
        factories.make_job(store, queue="drain")
    with running_server(rpc_settings(settings), store, notifier) as (server, port), stub_on(port) as stub:
        first, second = lease(stub, "drain", max_jobs=2)

        # When the server is told to stop with a 30 s grace period
        started = time.monotonic()
        stopper = threading.Thread(target=server.stop, args=(30,))
        stopper.start()
        _wait_until(lambda: server.gate.draining)

        # Then new leases are refused, but heartbeats, acks and nacks are served...
        refused = refusal(lease, stub, "drain")
        extended = extend(stub, first)
        time.sleep(0.5)
        still_serving = stopper.is_alive()
        acked = ack(stub, first)
        nacked = nack(stub, second, "worker stopped before the job finished")

        # ...and the server stops once nothing it leased is left to settle, not at the grace's end
        stopper.join(25)
        took = time.monotonic() - started

    assert refused.code() is C.UNAVAILABLE
    assert extended.status == "processing"
    assert still_serving
    assert (acked.status, nacked.status) == ("succeeded", "failed")
    assert not stopper.is_alive() and took < 20
    assert store.get_job(second.id).last_error == "worker stopped before the job finished"


def test_an_idle_server_stops_at_once_despite_silent_connections(settings, store, notifier):
    with running_server(rpc_settings(settings), store, notifier) as (server, port):
        silent = socket.create_connection(("127.0.0.1", port))
        half_open = socket.create_connection(("127.0.0.1", port))
        half_open.sendall(HTTP2_PREFACE + EMPTY_SETTINGS_FRAME)
        time.sleep(0.3)
        started = time.monotonic()
        server.stop(60)
        took = time.monotonic() - started
        silent.close()
        half_open.close()

    assert took < 10  # not the 60 s grace, nor the ~20 s until grpc drops an unfinished handshake


@pytest.mark.parametrize("greeting", [b"", HTTP2_PREFACE + EMPTY_SETTINGS_FRAME], ids=["silent", "http2-preface"])
def test_sigterm_exits_at_once_despite_a_connection_that_never_makes_a_call(database_url, greeting):
    # Given `quorra grpc` with a 60 s grace, and a load balancer's TCP probe connected to it
    port = free_port()
    process = start_grpc(database_url, port, QUORRA_SHUTDOWN_GRACE="60s")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        wait_serving(channel, process)
    probe = socket.create_connection(("127.0.0.1", port))
    probe.sendall(greeting)
    time.sleep(0.3)

    # When it gets SIGTERM
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=90)
    took = time.monotonic() - started
    probe.close()

    # Then it exits 0 without waiting out the grace period for the probe
    assert code == 0
    assert took < 10, f"took {took:.1f} s"  # before: the grace, or ~20 s until grpc drops the probe


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_call_counts_as_running_until_its_answer_is_sent():
    # Given a server behind the call gate whose answers take a while to go out (a reply on
    # a busy machine: the handler has returned, the bytes are not sent yet)
    gate = CallGate(threads=4, health_watches=1)
    handler_returned = threading.Event()

    def ack_job(request: bytes, context) -> bytes:
        handler_returned.set()
        return b"settled"

    def slow_serializer(reply: bytes) -> bytes:
        time.sleep(0.5)
        return reply

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[gate])
    handlers = {"AckJob": grpc.unary_unary_rpc_method_handler(ack_job, response_serializer=slow_serializer)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{SERVICE_NAME}/AckJob").future(b"ack", timeout=10)
        assert handler_returned.wait(5)

        # When shutdown waits for the gate to be idle, then cancels whatever is left
        idle = gate.wait_idle(time.monotonic() + 5)
        server.stop(0).wait()

        # Then the answer reached the client before the server stopped
        assert idle
        assert call.result() == b"settled"
