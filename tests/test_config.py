"""Settings.from_env: the GoQuorra variable names, durations, comma lists, the postgres://
spelling, and one InvalidConfig that names every bad variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from quorra.config import DEV_API_KEY, Settings, dial_target, listen_address, parse_address
from quorra.errors import InvalidConfig


def invalid(environ: dict[str, str]) -> InvalidConfig:
    with pytest.raises(InvalidConfig) as caught:
        Settings.from_env(environ)
    return caught.value


def test_an_empty_environment_gives_the_documented_defaults():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///quorra.db"
    assert (settings.http_addr, settings.grpc_addr, settings.redis_url) == (":8080", ":50051", None)
    assert settings.worker_queues == ("default",)
    assert (settings.worker_max_jobs, settings.worker_lease_ttl_seconds) == (5, 30.0)
    assert settings.api_keys == (DEV_API_KEY,) and settings.uses_dev_api_key


def test_from_env_reads_the_goquorra_variable_names():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://quorra@db/quorra",
            "REDIS_URL": "redis://cache:6379/0",
            "QUORRA_HTTP_ADDR": ":9090",
            "QUORRA_GRPC_ADDR": "0.0.0.0:6000",
            "QUORRA_LOG_LEVEL": "debug",
            "QUORRA_API_KEY": "secret",
            "QUORRA_WORKER_ID": "mailer-1",
            "QUORRA_WORKER_QUEUES": "email",
            "QUORRA_WORKER_MAX_JOBS": "10",
            "QUORRA_WORKER_LEASE_TTL": "60s",
        }
    )
    assert (settings.database_url, settings.redis_url) == ("postgresql://quorra@db/quorra", "redis://cache:6379/0")
    assert (settings.http_addr, settings.grpc_addr, settings.log_level) == (":9090", "0.0.0.0:6000", "debug")
    assert settings.api_keys == ("secret",) and not settings.uses_dev_api_key
    assert (settings.worker_id, settings.worker_queues) == ("mailer-1", ("email",))
    assert (settings.worker_max_jobs, settings.worker_lease_ttl_seconds) == (10, 60.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("500ms", 0.5), ("2m", 120), ("1h", 3600), ("7d", 604800), ("45", 45), ("1.5", 1.5), (" 10 s ", 10)],
)
def test_durations_take_a_unit_or_plain_seconds(text, seconds):
    assert Settings.from_env({"QUORRA_WORKER_LEASE_TTL": text}).worker_lease_ttl_seconds == seconds


@pytest.mark.parametrize("text", ["soon", "10x", "-5s", "0", "0s", "1e3", "s"])
def test_a_malformed_or_non_positive_duration_is_invalid(text):
    assert "QUORRA_WORKER_LEASE_TTL" in invalid({"QUORRA_WORKER_LEASE_TTL": text}).message


def test_idempotency_keys_are_kept_a_day_unless_configured():
    assert Settings.from_env({}).idempotency_ttl_seconds == 86400
    assert Settings.from_env({"QUORRA_IDEMPOTENCY_TTL": "2h"}).idempotency_ttl_seconds == 7200
    assert "QUORRA_IDEMPOTENCY_TTL" in invalid({"QUORRA_IDEMPOTENCY_TTL": "0"}).message


def test_comma_lists_are_trimmed_and_skip_empty_items():
    settings = Settings.from_env({"QUORRA_API_KEY": " key-a, key-b,,key-c ", "QUORRA_WORKER_QUEUES": "email,default"})
    assert settings.api_keys == ("key-a", "key-b", "key-c")
    assert settings.worker_queues == ("email", "default")


@pytest.mark.parametrize("variable", ["QUORRA_API_KEY", "QUORRA_WORKER_QUEUES"])
def test_a_list_of_only_commas_is_invalid(variable):
    assert variable in invalid({variable: " , ,"}).message


def test_queue_names_must_be_well_formed():
    assert "QUORRA_WORKER_QUEUES" in invalid({"QUORRA_WORKER_QUEUES": "email,bad queue"}).message


def test_the_goquorra_postgres_spelling_becomes_postgresql():
    url = "postgres://quorra:quorra@localhost:5432/quorra?sslmode=disable"
    settings = Settings.from_env({"DATABASE_URL": url})
    assert settings.database_url == "postgresql://quorra:quorra@localhost:5432/quorra?sslmode=disable"


@pytest.mark.parametrize(
    "url", ["sqlite:///quorra.db", "sqlite:////var/lib/quorra.db", "postgresql://h/db", "postgresql+psycopg2://h/db"]
)
def test_sqlite_and_postgresql_urls_are_kept_as_given(url):
    assert Settings.from_env({"DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("url", ["mysql://localhost/quorra", "quorra.db", "http://localhost"])
def test_other_database_urls_are_invalid(url):
    assert "DATABASE_URL" in invalid({"DATABASE_URL": url}).message


def test_a_redis_url_must_be_redis():
    assert "REDIS_URL" in invalid({"REDIS_URL": "http://cache:6379"}).message


def test_empty_variables_count_as_unset():
    settings = Settings.from_env({"DATABASE_URL": "", "REDIS_URL": "", "QUORRA_WORKER_MAX_JOBS": ""})
    assert (settings.database_url, settings.redis_url, settings.worker_max_jobs) == ("sqlite:///quorra.db", None, 5)


def test_invalid_config_names_every_bad_variable_at_once():
    # Given four bad variables and a good one
    environ = {
        "DATABASE_URL": "mysql://x",
        "QUORRA_LOG_LEVEL": "loud",
        "QUORRA_WORKER_MAX_JOBS": "0",
        "QUORRA_WORKER_LEASE_TTL": "soon",
        "QUORRA_HTTP_ADDR": ":8081",
    }
    # When settings are built
    error = invalid(environ)
    # Then one error names each bad variable, and only those
    named = {line.split(":")[0].strip() for line in error.message.splitlines()[1:]}
    assert named == {"DATABASE_URL", "QUORRA_LOG_LEVEL", "QUORRA_WORKER_MAX_JOBS", "QUORRA_WORKER_LEASE_TTL"}
    assert error.code == "invalid_config"


@pytest.mark.parametrize("value", ["abc", "1.5", "0", "1001"])
def test_integers_out_of_shape_or_range_are_invalid(value):
    assert "QUORRA_WORKER_MAX_JOBS" in invalid({"QUORRA_WORKER_MAX_JOBS": value}).message


@pytest.mark.parametrize("address", ["8080", "localhost", "host:port", ":99999"])
def test_a_malformed_listen_address_is_invalid(address):
    assert "QUORRA_HTTP_ADDR" in invalid({"QUORRA_HTTP_ADDR": address}).message


def test_overrides_win_over_the_environment():
    settings = Settings.from_env({"QUORRA_WORKER_MAX_JOBS": "7"}, worker_max_jobs=9)
    assert settings.worker_max_jobs == 9


def test_variables_quorra_does_not_know_are_ignored():
    assert Settings.from_env({"PATH": "/bin", "QUORRA_SOMETHING_ELSE": "x"}) == Settings.from_env({})


def test_settings_are_frozen():
    settings = Settings.from_env({})
    with pytest.raises(ValidationError):
        settings.worker_max_jobs = 50


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [(":8080", "0.0.0.0", 8080), ("localhost:50051", "localhost", 50051), ("[::1]:9000", "::1", 9000)],
)
def test_parse_address_reads_host_and_port(address, host, port):
    assert parse_address(address) == (host, port)


def test_dial_target_turns_a_listen_address_into_one_a_client_can_dial():
    assert dial_target(":50051") == "localhost:50051"
    assert dial_target("grpc.internal:50051") == "grpc.internal:50051"


@pytest.mark.parametrize(
    ("address", "bound"),
    [(":8080", "0.0.0.0:8080"), ("127.0.0.1:50051", "127.0.0.1:50051"), ("[::]:50051", "[::]:50051")],
)
def test_listen_address_fills_in_the_host_and_brackets_ipv6(address, bound):
    assert listen_address(address) == bound
