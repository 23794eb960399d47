"""Submit and follow Quorra jobs from Python, over the REST API (httpx; sync and asyncio).

    from quorra.client import Client            # AsyncClient for asyncio code
    client = Client.from_env()                  # QUORRA_URL, QUORRA_API_KEY
    job = client.enqueue("email_send", {"to": "a@b.c"}, queue="email", delay=timedelta(minutes=5))
    done = client.wait(job.id, timeout=30)      # succeeded, dead or cancelled

Importing this package loads httpx and tenacity, never the server's libraries (SQLAlchemy,
Flask, psycopg2, grpc)."""

from quorra.client.aio import AsyncClient
from quorra.client.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    QuorraClientError,
    ServerError,
    Unauthenticated,
    Unavailable,
    Unreachable,
    WaitTimeout,
)
from quorra.client.models import (
    Attempt,
    Job,
    JobStatus,
    QueueCount,
    SubmittedJob,
    SubmittedWorkflow,
    Worker,
    Workflow,
)
from quorra.client.sync import Client

__all__ = [
    "AsyncClient",
    "Attempt",
    "Client",
    "Conflict",
    "InvalidArgument",
    "Job",
    "JobStatus",
    "NotFound",
    "PayloadTooLarge",
    "QueueCount",
    "QuorraClientError",
    "ServerError",
    "SubmittedJob",
    "SubmittedWorkflow",
    "Unauthenticated",
    "Unavailable",
    "Unreachable",
    "WaitTimeout",
    "Worker",
    "Workflow",
]
