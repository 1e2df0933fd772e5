"""What every receiver uses to parse a provider's verified body: the lenient base model, Meta's
``error_data`` shape (YCloud nests it too) and one parse that never echoes input values.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from connector.webhooks.model import WebhookPayloadError, describe_validation_error


class ProviderPayload(BaseModel):
    """Base of the models a receiver parses a provider's body with: only the parts we read,
    unknown fields ignored (providers add fields), numbers taken where text is expected."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)


class ErrorData(ProviderPayload):
    """``error_data`` of a Meta error, also inside YCloud's ``whatsappApiError``."""

    details: str | None = None


PayloadT = TypeVar("PayloadT", bound=BaseModel)


def parse_payload(model: type[PayloadT], body: bytes) -> PayloadT:
    """``body`` as ``model``; ``WebhookPayloadError`` (no input value echoed) if it is not one."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise WebhookPayloadError(describe_validation_error(exc)) from None
