"""Provider adapters and their account settings; ``build_provider`` picks the adapter for an
account. Everything here is pure (no I/O); sending lives elsewhere.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from connector.providers.account import ERROR, SKIP, AccountSettings
from connector.providers.base import OutcomeKind, Provider, ProviderOutcome
from connector.providers.meta import MetaAccount, MetaCloudProvider
from connector.providers.ycloud import YCloudAccount, YCloudProvider
from connector.providers.zapi import ZApiAccount, ZApiProvider
from connector.providers.zonos import ZonosAccount, ZonosProvider

AccountConfig = Annotated[
    MetaAccount | YCloudAccount | ZApiAccount | ZonosAccount, Field(discriminator="provider")
]


def build_provider(account: AccountConfig) -> Provider:
    """The adapter for one configured account."""
    if isinstance(account, MetaAccount):
        return MetaCloudProvider(account)
    if isinstance(account, YCloudAccount):
        return YCloudProvider(account)
    if isinstance(account, ZApiAccount):
        return ZApiProvider(account)
    return ZonosProvider(account)


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
]
