"""Which configured account an event goes to: the account it names, else its merchant's route,
else the default. Pure lookups over configuration; an event with no account is unroutable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.config import RoutingSettings
    from connector.contract.events import OrderStatusChanged
    from connector.providers.base import Provider


class UnroutableError(Exception):
    """No configured account takes the event (an ``unroutable`` error record)."""


class Router:
    def __init__(self, routing: RoutingSettings, providers: Mapping[str, Provider]) -> None:
        self._routing = routing
        self._providers = providers

    def route(self, event: OrderStatusChanged) -> Provider:
        name = event.account
        if name is None and event.merchant_id is not None:
            name = self._routing.by_merchant.get(event.merchant_id)
        if name is None:
            name = self._routing.default_account
        if name is None:
            raise UnroutableError(
                "no account: the event names none, and no route or default matches"
            )
        provider = self._providers.get(name)
        if provider is None:
            raise UnroutableError(f"account {name!r} is not configured")
        return provider
