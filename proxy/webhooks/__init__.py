"""Layers webhooks: signed events that end polling early (polling stays the fallback)."""

from __future__ import annotations

from proxy.webhooks.receiver import WEBHOOK_WORK, add_webhook_routes, receive_webhook
from proxy.webhooks.signature import (
    VerifyResult,
    WebhookSignatureError,
    parse_secrets,
    sign,
    verify_signature,
)

__all__ = [
    "WEBHOOK_WORK",
    "VerifyResult",
    "WebhookSignatureError",
    "add_webhook_routes",
    "parse_secrets",
    "receive_webhook",
    "sign",
    "verify_signature",
]
