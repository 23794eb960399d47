"""The health service (quorra.rpc.health): Check, and Watch streams that are told each change
and never stall the server's polling thread when they end."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quorra.rpc.health import HealthServicer
from tests.rpc.support import running_server

R = health_pb2.HealthCheckResponse
OVERALL = health_pb2.HealthCheckRequest(service="")
SLOW = health_pb2.HealthCheckRequest(service="slow")


class EndingContext:
    """The part of a grpc.ServicerContext that Watch uses: the callbacks grpcio runs, on its
    polling thread, once the call has ended."""

    def __init__(self) -> None:
        self.callbacks: list = []

    def add_callback(self, callback) -> bool:
        self.callbacks.append(callback)
        return True

    def end(self) -> None:
        for callback in self.callbacks:
            callback()


class HeldSend:
    """A watcher's send whose `held`-th message stays on its way until released, as grpcio's
    send waits for the polling thread to report it complete."""

    def __init__(self, held: int) -> None:
        self.held, self.calls = held, 0
        self.in_flight, self.released = threading.Event(), threading.Event()

    def __call__(self, _response) -> None:
        self.calls += 1
        if self.calls == self.held:
            self.in_flight.set()
            self.released.wait(60)


def _first_answer_on_its_way(servicer: HealthServicer) -> HeldSend:
    send = HeldSend(held=1)
    threading.Thread(target=servicer.Watch, args=(SLOW, EndingContext(), send), daemon=True).start()
    return send


def _status_change_on_its_way(servicer: HealthServicer) -> HeldSend:
    send = HeldSend(held=2)
    servicer.Watch(SLOW, EndingContext(), send)
    threading.Thread(target=servicer.set, args=(SLOW.service, R.SERVING), daemon=True).start()
    return send


@pytest.mark.parametrize("on_its_way", [_first_answer_on_its_way, _status_change_on_its_way])
def test_a_watch_that_ends_while_another_watchers_status_is_on_its_way_is_forgotten_at_once(on_its_way):
    # Given a watcher, and another watcher whose status is on its way (its send held)
    servicer = HealthServicer()
    watcher, told = EndingContext(), []
    servicer.Watch(OVERALL, watcher, told.append)
    send = on_its_way(servicer)
    assert send.in_flight.wait(30)

    # When the first watch ends (grpcio runs its callbacks on the thread the held send waits for)
    ending = threading.Thread(target=watcher.end, daemon=True)
    ending.start()
    ending.join(30)
    ended_meanwhile = not ending.is_alive()
    send.released.set()

    # Then it was forgotten without waiting for that send, and is told nothing more
    servicer.set("", R.NOT_SERVING)
    assert ended_meanwhile
    assert [answer.status for answer in told] == [R.SERVING]


def test_check_of_a_service_the_server_does_not_know_is_not_found(server):
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel, pytest.raises(grpc.RpcError) as refused:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nowhere"), timeout=10)

    assert refused.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_watcher_is_told_each_change_and_not_serving_at_shutdown(server_settings, store, notifier):
    with (
        running_server(server_settings, store, notifier) as (server, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        # Given a watch of a service the server does not know yet
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="probe"), timeout=60)
        first = next(watch).status

        # When the service's status is set, then the server shuts down
        server.monitor.servicer.set("probe", R.SERVING)
        changed = next(watch).status
        server.monitor.stop()  # what RpcServer.stop does first
        at_shutdown = next(watch).status
        watch.cancel()

    # Then the watcher heard each, in order
    assert (first, changed, at_shutdown) == (R.SERVICE_UNKNOWN, R.SERVING, R.NOT_SERVING)
