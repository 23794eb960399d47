"""/v1/webhooks: create, list, read and delete webhooks (quorra.webhooks). The signing
secret is generated here and returned once, in the answer to the create; reads never show
it. Every route needs the webhooks:manage permission (admins): a webhook sends job data
to a URL of its creator's choosing. A webhook is its creator's tenant's: it hears that
tenant's job events only, and another tenant's webhook is a 404. Thin views: parse -> manager (which audits the change) or
store (reads) -> JSON."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, url_for

from quorra.access import Permission
from quorra.api.auth import current_actor, current_tenant, require_api_key, requires
from quorra.api.body import read_json
from quorra.api.jobs import timestamp
from quorra.api.services import services
from quorra.webhooks import Webhook, WebhookSpec, new_secret

MAX_BODY_BYTES = 64 * 1024  # a URL, a few names and a description

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")
bp.before_request(require_api_key)


@bp.post("")
@requires(Permission.WEBHOOKS_MANAGE)
def create():
    spec = WebhookSpec.parse(read_json(MAX_BODY_BYTES))
    webhook = services().manager.create_webhook(spec, new_secret(), tenant=current_tenant(), actor=current_actor())
    body = webhook_json(webhook) | {"secret": webhook.secret}
    return body, 201, {"Location": url_for(".get_webhook", webhook_id=webhook.id)}


@bp.get("")
@requires(Permission.WEBHOOKS_MANAGE)
def list_webhooks():
    return {"webhooks": [webhook_json(webhook) for webhook in services().store.list_webhooks(tenant=current_tenant())]}


@bp.get("/<webhook_id>")
@requires(Permission.WEBHOOKS_MANAGE)
def get_webhook(webhook_id: str):
    return webhook_json(services().store.get_webhook(webhook_id, tenant=current_tenant()))


@bp.delete("/<webhook_id>")
@requires(Permission.WEBHOOKS_MANAGE)
def delete(webhook_id: str):
    services().manager.delete_webhook(webhook_id, tenant=current_tenant(), actor=current_actor())
    return "", 204


def webhook_json(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "url": webhook.url,
        "events": [event.value for event in webhook.events],
        "queues": list(webhook.queues) if webhook.queues is not None else None,
        "types": list(webhook.types) if webhook.types is not None else None,
        "description": webhook.description,
        "max_retries": webhook.max_retries,
        "created_at": timestamp(webhook.created_at),
        "updated_at": timestamp(webhook.updated_at),
    }
