"""GET /v1/stats/throughput: a point per minute for each queue, zeros included."""

from __future__ import annotations

from tests.api.conftest import AUTH, assert_error
from tests.factories import leased_job


def test_throughput_has_a_point_per_minute_ending_now(client, store):
    job = leased_job(store, queue="mail")
    store.ack(job.id, job.lease_id)

    body = client.get("/v1/stats/throughput?minutes=15", headers=AUTH).get_json()

    assert body["minutes"] == 15
    [series] = body["queues"]
    assert series["queue"] == "mail" and len(series["points"]) == 15
    assert series["points"][0]["minute"] == body["since"] and series["points"][-1]["minute"] == body["until"]
    assert sum(point["succeeded"] for point in series["points"]) == 1
    assert sum(point["failed"] for point in series["points"]) == 0


def test_throughput_defaults_to_an_hour_and_may_be_empty(client):
    body = client.get("/v1/stats/throughput", headers=AUTH).get_json()
    assert (body["minutes"], body["queues"]) == (60, [])


def test_a_bad_window_is_a_400(client):
    for query in ("minutes=0", "minutes=1441", "queue=bad%20name", "minute=5"):
        assert_error(client.get(f"/v1/stats/throughput?{query}", headers=AUTH), 400, "invalid_argument")
