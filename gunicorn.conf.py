"""gunicorn settings for Quorra's web process, for running plain gunicorn:

    gunicorn -c gunicorn.conf.py 'quorra.api:create_app()'

`quorra web` (what `make run` and the Procfile use) applies exactly these settings from
code, so an installed wheel needs no file. They come from the environment through
quorra.config.Settings: QUORRA_HTTP_ADDR (bind), QUORRA_WEB_WORKERS, QUORRA_WEB_THREADS
(gthread workers), QUORRA_SHUTDOWN_GRACE (graceful_timeout); the access log is off (the
app logs each request as JSON); PROMETHEUS_MULTIPROC_DIR, when set, is made if missing and
child_exit marks dead workers there for prometheus_client's multiprocess mode; on_starting
refuses a database whose schema is not at head."""

from quorra.config import Settings, prepare_multiprocess_dir
from quorra.logs import configure_logging

_settings = Settings.from_env()
configure_logging(_settings, "web")
prepare_multiprocess_dir()  # before quorra.api declares its metrics, which opens files there

from quorra import metrics
from quorra.api.server import gunicorn_settings

metrics.limit_labels(_settings.metrics_max_queues, _settings.metrics_max_job_types)

globals().update(gunicorn_settings(_settings))
