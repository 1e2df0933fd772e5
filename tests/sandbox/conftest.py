"""Fixtures for sandbox tests over real loopback HTTP: the sandbox, a client session and a
webhook receiver (``tests.support.sandbox_client``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from connector.dev.sandbox import SandboxConfig, SandboxServer
from tests.support.sandbox_client import WebhookReceiver


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    rec = WebhookReceiver()
    await rec.start()
    yield rec
    await rec.stop()


@pytest.fixture
async def sandbox(receiver: WebhookReceiver) -> AsyncIterator[SandboxServer]:
    config = SandboxConfig().merged(
        {"webhooks": {"meta_url": receiver.url + "/meta", "ycloud_url": receiver.url + "/yc"}}
    )
    async with SandboxServer(config) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
