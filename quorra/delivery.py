"""Webhook deliveries: the built-in worker of the queue ``quorra.webhooks``.

Every scheduler process (leader or not) runs one Deliverer thread, unless
QUORRA_WEBHOOK_CONCURRENCY=0. It leases delivery jobs through the JobManager like any
worker, posts each one (up to QUORRA_WEBHOOK_CONCURRENCY at once), and acks a 2xx answer or
nacks anything else (another status, a timeout, a refused address), so a delivery is retried
with the backoff of any job, up to its webhook's max_retries, and then dead (the DLQ,
retried by hand like any job). A process killed mid-delivery leaves a lease that expires:
the delivery runs again. Delivery is therefore at least once; receivers deduplicate by the
``webhook-id`` header.

QUORRA_WEBHOOK_ALLOW_PRIVATE=false refuses deliveries to hosts that resolve to a private,
loopback, link-local or otherwise non-global address. Every address the name resolves to is
checked, and the connection goes to the checked address (the Host header and TLS name stay
the URL's), so a DNS answer that changes between check and connect cannot slip one through.
Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

import urllib3

from quorra import __version__
from quorra.access import ALL_TENANTS
from quorra.config import Settings
from quorra.jobs import Job
from quorra.manager import JobManager
from quorra.store import Settlement, Store, WebhookNotFound
from quorra.webhooks import DELIVER_TYPE, WEBHOOK_QUEUE, Delivery, Webhook, signature_headers

logger = logging.getLogger(__name__)

USER_AGENT = f"Quorra-Webhooks/{__version__}"
MAX_ERROR_BODY_CHARS = 200  # of a receiver's answer, quoted in the delivery's last_error
LEASE_MARGIN_SECONDS = 30.0  # a delivery's lease outlives its timeout by this much


class AddressRefused(Exception):
    """The URL's host resolves to an address deliveries may not go to."""


@dataclass(frozen=True)
class Answer:
    status: int
    excerpt: str


class Deliverer:
    def __init__(self, settings: Settings, store: Store, manager: JobManager, *, worker_id: str):
        self.store = store  # reads the webhooks; every change of a job goes through the manager
        self.manager = manager
        self.worker_id = worker_id
        self.timeout_seconds = settings.webhook_timeout_seconds
        self.allow_private = settings.webhook_allow_private
        self.concurrency = settings.webhook_concurrency
        self.poll_seconds = settings.webhook_poll_interval_seconds
        self._pool = ThreadPoolExecutor(max(1, self.concurrency), thread_name_prefix="webhook")

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set; between batches, wait for new deliveries by polling."""
        logger.info(
            "webhook deliverer started",
            extra={"event": "deliverer.started", "worker_id": self.worker_id, "concurrency": self.concurrency},
        )
        try:
            while not stop.is_set():
                if not self._run_once_safely():
                    stop.wait(self.poll_seconds)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            logger.info("webhook deliverer stopped", extra={"event": "deliverer.stopped", "worker_id": self.worker_id})

    def _run_once_safely(self) -> int:
        try:
            return self.run_once()
        except Exception:  # one bad batch (e.g. the database away) must not end the thread
            logger.warning("webhook deliveries failed", extra={"event": "deliverer.failed"}, exc_info=True)
            return 0

    def run_once(self) -> int:
        """Lease up to `concurrency` deliveries, post them in parallel, settle them in one
        batch; how many were leased."""
        ttl = self.timeout_seconds + LEASE_MARGIN_SECONDS
        # Deliveries are jobs of their webhook's tenant: one deliverer serves every tenant.
        leased = self.manager.lease([WEBHOOK_QUEUE], self.worker_id, self.concurrency, ttl, tenant=ALL_TENANTS)
        if not leased:
            return 0
        targets = [self._target(job) for job in leased]  # database reads here, in this thread
        settlements = list(self._pool.map(self._deliver, leased, targets))
        self.manager.settle_many(settlements, worker_id=self.worker_id, tenant=ALL_TENANTS)
        return len(leased)

    def _target(self, job: Job) -> Webhook | Settlement:
        """The webhook to post to, or the settlement of a delivery that has none."""
        if job.type != DELIVER_TYPE:
            return _nack(job, f"the queue {WEBHOOK_QUEUE} holds only {DELIVER_TYPE} jobs")
        try:
            webhook_id = Delivery.from_payload(job.payload or {}).webhook_id
            return self.store.get_webhook(webhook_id, tenant=job.tenant)  # a delivery is its webhook's tenant's
        except (ValueError, TypeError) as exc:
            return _nack(job, str(exc))
        except WebhookNotFound:  # nothing to deliver to any more: done
            return Settlement(job.id, job.lease_id or "", True, result={"skipped": "the webhook was deleted"})

    def _deliver(self, job: Job, target: Webhook | Settlement) -> Settlement:
        if isinstance(target, Settlement):
            return target
        delivery = Delivery.from_payload(job.payload or {})
        try:
            answer = self.post(target, job.id, delivery.body())
        except (AddressRefused, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            return self._failed(job, target, delivery, f"POST {target.url} failed: {_reason(exc)}")
        if not 200 <= answer.status < 300:
            return self._failed(job, target, delivery, f"POST {target.url} answered {answer.status}: {answer.excerpt}")
        self._log("webhook delivered", "webhook.delivered", job, target, delivery, status_code=answer.status)
        return Settlement(job.id, job.lease_id or "", True, result={"status_code": answer.status})

    def _failed(self, job: Job, target: Webhook, delivery: Delivery, error: str) -> Settlement:
        self._log(
            "webhook delivery failed", "webhook.failed", job, target, delivery, level=logging.WARNING, error=error
        )
        return _nack(job, error)

    def _log(self, message, event, job, target, delivery, *, level=logging.INFO, **extra: Any) -> None:
        fields = {"webhook_id": target.id, "delivery_id": job.id, "webhook_event": delivery.event}
        fields |= {"job_id": delivery.job.get("id"), "attempt": job.attempts}
        logger.log(level, message, extra={"event": event, **fields, **extra})

    def post(self, webhook: Webhook, message_id: str, body: str) -> Answer:
        """One signed POST of `body` to the webhook's URL, to an address checked first."""
        parts = urlsplit(webhook.url)
        address = checked_address(parts, allow_private=self.allow_private)
        headers = signature_headers(webhook.secret, message_id, datetime.now(UTC), body)
        headers |= {"Host": parts.netloc, "Content-Type": "application/json", "User-Agent": USER_AGENT}
        pool = _connection_pool(parts, address, self.timeout_seconds)
        try:
            response = pool.urlopen(
                "POST",
                _target_path(parts),
                body=body.encode(),
                headers=headers,
                redirect=False,
                retries=False,  # retries are the job's, with its backoff
                preload_content=False,
                timeout=urllib3.Timeout(total=self.timeout_seconds),
            )
            try:
                excerpt = response.read(MAX_ERROR_BODY_CHARS).decode("utf-8", "replace")
                return Answer(response.status, excerpt)
            finally:
                response.close()
        finally:
            pool.close()


def _nack(job: Job, error: str) -> Settlement:
    return Settlement(job.id, job.lease_id or "", False, error=error)


def checked_address(parts: SplitResult, *, allow_private: bool) -> str:
    """The address to connect to: the first the host resolves to, once every one of them
    was checked (without allow_private, each must be a global unicast address)."""
    host = parts.hostname or ""
    try:
        found = socket.getaddrinfo(host, parts.port or _default_port(parts), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AddressRefused(f"cannot resolve {host!r}: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            mapped = getattr(ip, "ipv4_mapped", None)
            if not ip.is_global or ip.is_multicast or (mapped is not None and not mapped.is_global):
                raise AddressRefused(
                    f"{host} resolves to {address}, a private address (QUORRA_WEBHOOK_ALLOW_PRIVATE=false)"
                )
    if not addresses:
        raise AddressRefused(f"{host!r} resolves to no address")
    return addresses[0]


def _connection_pool(parts: SplitResult, address: str, timeout: float) -> urllib3.HTTPConnectionPool:
    port = parts.port or _default_port(parts)
    if parts.scheme == "https":  # TLS to the checked address, verified against the URL's name
        return urllib3.HTTPSConnectionPool(
            address, port, maxsize=1, server_hostname=parts.hostname, assert_hostname=parts.hostname, timeout=timeout
        )
    return urllib3.HTTPConnectionPool(address, port, maxsize=1, timeout=timeout)


def _default_port(parts: SplitResult) -> int:
    return 443 if parts.scheme == "https" else 80


def _target_path(parts: SplitResult) -> str:
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # urllib3 wraps the socket error
    return str(reason or exc) or type(exc).__name__
