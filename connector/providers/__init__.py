"""Provider adapters and their account settings; ``build_provider`` picks the adapter for an
account. Everything here is pure (no I/O); sending lives elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final

from pydantic import ConfigDict, Field, TypeAdapter

from connector.providers.account import ERROR, SKIP, AccountSettings
from connector.providers.base import OutcomeKind, Provider, ProviderOutcome
from connector.providers.meta import MetaAccount, MetaCloudProvider
from connector.providers.ycloud import YCloudAccount, YCloudProvider
from connector.providers.zapi import ZApiAccount, ZApiProvider
from connector.providers.zonos import ZonosAccount, ZonosProvider

AccountConfig = Annotated[
    MetaAccount | YCloudAccount | ZApiAccount | ZonosAccount, Field(discriminator="provider")
]

# hide_input_in_errors: pydantic applies it from the outermost validator only, so any model that
# embeds AccountConfig (the daemon's settings) must set it too, or errors echo tokens.
_ACCOUNT_ADAPTER: TypeAdapter[AccountConfig] = TypeAdapter(
    AccountConfig, config=ConfigDict(hide_input_in_errors=True)
)


def parse_account(data: Mapping[str, Any]) -> AccountConfig:
    """Validate one account mapping; errors name the field and never echo the input."""
    return _ACCOUNT_ADAPTER.validate_python(data)


# The adapter of each provider kind, keyed by the accounts' ``provider`` discriminator.
_ADAPTERS: Final[Mapping[str, Callable[[Any], Provider]]] = {
    "meta": MetaCloudProvider,
    "ycloud": YCloudProvider,
    "zapi": ZApiProvider,
    "zonos": ZonosProvider,
}


def build_provider(account: AccountConfig) -> Provider:
    """The adapter for one configured account."""
    return _ADAPTERS[account.provider](account)


__all__ = [
    "ERROR",
    "SKIP",
    "AccountConfig",
    "AccountSettings",
    "MetaAccount",
    "MetaCloudProvider",
    "OutcomeKind",
    "Provider",
    "ProviderOutcome",
    "YCloudAccount",
    "YCloudProvider",
    "ZApiAccount",
    "ZApiProvider",
    "ZonosAccount",
    "ZonosProvider",
    "build_provider",
    "parse_account",
]
