"""The worker SDK: lease jobs over gRPC and run them with your handlers.

    from quorra.worker import Worker

    worker = Worker.from_env()

    @worker.handler("email_send")
    def send_email(job):     # job.id, job.type, job.payload (dict), job.attempt, ...
        ...                  # return normally = ack; raise = nack with the message

    worker.run()

Importing this package loads no database or web code (only the generated gRPC modules,
config, errors, jobs and logs), so a worker installs and starts light.
"""

from quorra.worker.job import LeasedJob
from quorra.worker.registry import HandlerRegistry, handler
from quorra.worker.worker import Worker

__all__ = ["HandlerRegistry", "LeasedJob", "Worker", "handler"]
