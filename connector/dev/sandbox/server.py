"""The sandbox HTTP server: mounts the four providers' endpoints and the ``/_sandbox``
control and inspection API on one aiohttp application, and owns its lifecycle.

It wires and serves; provider behaviour lives in the provider modules, state in the engine.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from connector.dev.sandbox import meta, ycloud, zapi, zonos
from connector.dev.sandbox.config import (
    PROVIDERS,
    OrderSeed,
    Outage,
    Rule,
    SandboxConfig,
    TemplateStatusChange,
)
from connector.dev.sandbox.responder import SandboxResponder
from connector.dev.sandbox.state import RecordedRequest

JSON = "application/json"


_ModelT = TypeVar("_ModelT", bound=BaseModel)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=JSON)


def _bad_request(message: str) -> web.Response:
    return _json({"error": message, "details": None}, status=400)


def _invalid(message: str, exc: ValidationError) -> web.HTTPBadRequest:
    """400 with where the body is wrong, without echoing any input value (raised: aiohttp
    answers it)."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    text = orjson.dumps({"error": message, "details": errors}).decode()
    return web.HTTPBadRequest(text=text, content_type=JSON)


def _validated(model: type[_ModelT], data: Any, what: str) -> _ModelT:
    """``data`` as ``model``, or the 400 ``invalid <what>`` raised."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(f"invalid {what}", exc) from None


class SandboxServer:
    """One loopback HTTP server that behaves like Meta, YCloud, Z-API and Zonos.

    ``async with SandboxServer(config) as sandbox:`` starts it on a free port; adapters use
    ``sandbox.provider_url("meta")`` etc. as their base URL.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.engine = SandboxResponder(config or SandboxConfig())
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving and return the base URL (``http://host:port``)."""
        if self._runner is not None:
            raise RuntimeError("sandbox already started")
        runner = web.AppRunner(
            self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=2048)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._url = f"http://{shown}:{bound_port}"
        await self.engine.webhooks.start()
        return self._url

    async def stop(self) -> None:
        """Stop serving: held (timeout-fault) requests are released, webhooks stop."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.engine.stopping()
        try:
            await runner.cleanup()
        finally:
            await self.engine.webhooks.stop()

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("sandbox not started")
        return self._url

    def provider_url(self, provider: str) -> str:
        """The base URL an adapter for ``provider`` should use ("meta", "ycloud", ...)."""
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}")
        return f"{self.url}/{provider}"

    # -- Python control API ----------------------------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        return self.engine.config

    def requests(self, since: int = 0, limit: int | None = None) -> list[RecordedRequest]:
        """Accepted requests with ``seq > since``, in arrival order."""
        return self.engine.log.since(since, limit)

    def stats(self) -> dict[str, Any]:
        engine = self.engine
        log = engine.log
        webhooks = engine.webhooks
        return {
            "requests": engine.counters.snapshot(),
            "accepted": log.total,
            "log": {
                "size": len(log),
                "first_seq": log.first_seq,
                "dropped": log.dropped,
                "capacity": log.capacity,
            },
            "orders": len(engine.orders),
            "rules": len(engine.rules.snapshot()),
            "webhooks": {**webhooks.counts, "pending": webhooks.pending},
            "uptime_s": round(time.time() - engine.started_at, 3),
        }

    def set_config(self, config: SandboxConfig | dict[str, Any]) -> SandboxConfig:
        """Replace the config, or merge a partial dict into the current one."""
        new = config if isinstance(config, SandboxConfig) else self.config.merged(config)
        self.engine.set_config(new)
        return new

    def add_rule(self, rule: Rule | dict[str, Any]) -> None:
        self.engine.add_rule(rule if isinstance(rule, Rule) else Rule.model_validate(rule))

    def seed_order(self, seed: OrderSeed | dict[str, Any]) -> None:
        """Put an order into a state (e.g. Zonos IGLOBAL_FRAUD_REVIEW, Meta payment paid)."""
        seed = seed if isinstance(seed, OrderSeed) else OrderSeed.model_validate(seed)
        key = seed.key
        if seed.provider == "zonos":
            split = zonos.split_order_id(key)
            key = split[1] if split is not None else key
        order = self.engine.orders.ensure(seed.provider, key)
        if seed.status is not None:
            order.status = seed.status
        if seed.payment_status is not None:
            order.payment_status = seed.payment_status

    def reset(self) -> None:
        self.engine.reset()

    def last_processed(self, provider: str, order_ref: str) -> str | None:
        """The last status the sandbox applied to an order (late requests included), or None.

        ``order_ref`` is the order as the provider names it: Meta/YCloud ``reference_id``, Z-API
        ``referenceId``, Zonos ``orderId`` as sent.
        """
        found = self.engine.processed.get((provider, order_ref))
        return found.status if found is not None else None

    def processed(self, provider: str | None = None) -> dict[str, dict[str, Any]]:
        """Per order (``"provider/order_ref"``): the last applied status, its log seq, late?"""
        return {
            f"{p}/{ref}": {"status": v.status, "seq": v.seq, "late": v.late}
            for (p, ref), v in self.engine.processed.items()
            if provider is None or p == provider
        }

    def start_outage(self, provider: str, account: str | None = None) -> None:
        """Answer 503 to everything of ``provider`` (or only ``account``) until cleared."""
        outage = Outage.model_validate({"provider": provider, "account": account})
        self.engine.outages.add((outage.provider, outage.account))

    def end_outage(self, provider: str | None = None, account: str | None = None) -> None:
        """Clear one outage, or with no arguments all of them."""
        if provider is None:
            self.engine.outages.clear()
        else:
            self.engine.outages.discard((provider, account))

    def templates(self, provider: str | None = None) -> list[dict[str, Any]]:
        """Every template created through Meta's or YCloud's template API."""
        return [
            t.as_dict()
            for t in self.engine.templates.all()
            if provider is None or t.provider == provider
        ]

    def set_template_status(
        self,
        name: str,
        status: str,
        *,
        language: str | None = None,
        provider: str | None = None,
    ) -> int:
        """Move a template (all its variants, or one ``language``) to ``status`` (e.g. PAUSED,
        as Meta does on poor feedback); how many variants matched. Meta sends of a PAUSED or
        DISABLED template then fail with 132015 or 132016."""
        change = TemplateStatusChange.model_validate(
            {"name": name, "status": status, "language": language, "provider": provider}
        )
        return self.engine.templates.set_status(change)

    def outages(self) -> list[dict[str, str | None]]:
        return [{"provider": p, "account": a} for p, a in sorted(self.engine.outages, key=str)]

    # -- HTTP ------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        engine = self.engine
        engine.server_errors = {
            "meta": meta.server_error,
            "ycloud": ycloud.server_error_for(engine),
            "zapi": zapi.server_error,
            "zonos": zonos.server_error,
        }
        app = web.Application()
        add = app.router.add_route
        routes = {
            "meta": meta.ROUTES,
            "ycloud": ycloud.ROUTES,
            "zapi": zapi.ROUTES,
            "zonos": zonos.ROUTES,
        }
        for provider, provider_routes in routes.items():
            for method, path, handler in provider_routes:
                add(method, f"/{provider}{path}", engine.endpoint(provider, handler))
        add("GET", "/_sandbox/templates", self._get_templates)
        add("POST", "/_sandbox/templates/status", self._post_template_status)
        add("GET", "/_sandbox/health", self._health)
        add("GET", "/_sandbox/requests", self._requests)
        add("GET", "/_sandbox/stats", self._stats)
        add("GET", "/_sandbox/config", self._get_config)
        add("POST", "/_sandbox/config", self._post_config)
        add("GET", "/_sandbox/rules", self._get_rules)
        add("POST", "/_sandbox/rules", self._post_rules)
        add("DELETE", "/_sandbox/rules", self._delete_rules)
        add("POST", "/_sandbox/orders", self._post_orders)
        add("GET", "/_sandbox/orders/{provider}/{key}", self._get_order)
        add("GET", "/_sandbox/webhooks", self._webhooks)
        add("GET", "/_sandbox/processed", self._get_processed)
        add("GET", "/_sandbox/processed/{provider}/{key}", self._get_processed_order)
        add("GET", "/_sandbox/outages", self._get_outages)
        add("POST", "/_sandbox/outages", self._post_outages)
        add("DELETE", "/_sandbox/outages", self._delete_outages)
        add("POST", "/_sandbox/reset", self._reset)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _requests(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query.get("limit", "1000"))
        except ValueError:
            return _bad_request("since and limit must be integers")
        if limit < 0 or since < 0:
            return _bad_request("since and limit must be >= 0")
        items = self.engine.log.since(since, limit)
        log = self.engine.log
        return _json(
            {
                "requests": items,
                "next_since": items[-1].seq if items else max(since, log.first_seq - 1),
                "first_seq": log.first_seq,
                "total": log.total,
                "dropped": log.dropped,
            }
        )

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())

    async def _get_config(self, request: web.Request) -> web.Response:
        # SecretStr fields dump as "**********": credentials never leave through this API.
        return _json(self.config.model_dump(mode="json"))

    async def _read_json(self, request: web.Request) -> Any:
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None

    async def _post_config(self, request: web.Request) -> web.Response:
        patch = await self._read_json(request)
        if not isinstance(patch, dict):
            return _bad_request("body must be a JSON object")
        try:
            config = self.set_config(patch)
        except ValidationError as exc:
            raise _invalid("invalid config", exc) from None
        return _json(config.model_dump(mode="json"))

    async def _get_rules(self, request: web.Request) -> web.Response:
        return _json({"rules": self.engine.rules.snapshot()})

    async def _read_items(
        self, request: web.Request, model: type[_ModelT], what: str
    ) -> list[_ModelT]:
        """The body as one object or a list of them, each validated as ``model``."""
        body = await self._read_json(request)
        return [
            _validated(model, item, what) for item in (body if isinstance(body, list) else [body])
        ]

    async def _post_rules(self, request: web.Request) -> web.Response:
        for rule in await self._read_items(request, Rule, "rule"):
            self.engine.add_rule(rule)
        return _json({"rules": self.engine.rules.snapshot()})

    async def _delete_rules(self, request: web.Request) -> web.Response:
        self.engine.rules.clear()
        return _json({"rules": []})

    async def _post_orders(self, request: web.Request) -> web.Response:
        seeds = await self._read_items(request, OrderSeed, "order seed")
        for seed in seeds:
            self.seed_order(seed)
        return _json({"seeded": len(seeds)})

    async def _get_order(self, request: web.Request) -> web.Response:
        order = self.engine.orders.get(request.match_info["provider"], request.match_info["key"])
        if order is None:
            return _json({"error": "unknown order"}, status=404)
        return _json({"status": order.status, "payment_status": order.payment_status})

    async def _webhooks(self, request: web.Request) -> web.Response:
        webhooks = self.engine.webhooks
        return _json(
            {**webhooks.counts, "pending": webhooks.pending, "recent": list(webhooks.recent)}
        )

    async def _get_processed(self, request: web.Request) -> web.Response:
        return _json({"orders": self.processed(request.query.get("provider"))})

    async def _get_processed_order(self, request: web.Request) -> web.Response:
        found = self.engine.processed.get(
            (request.match_info["provider"], request.match_info["key"])
        )
        if found is None:
            return _json({"error": "nothing processed for this order"}, status=404)
        return _json({"status": found.status, "seq": found.seq, "late": found.late})

    async def _get_templates(self, request: web.Request) -> web.Response:
        return _json({"templates": self.templates(request.query.get("provider"))})

    async def _post_template_status(self, request: web.Request) -> web.Response:
        body = await self._read_json(request)
        change = _validated(TemplateStatusChange, body, "template status change")
        changed = self.engine.templates.set_status(change)
        if not changed:
            return _json({"error": "no such template", "changed": 0}, status=404)
        return _json({"changed": changed, "templates": self.templates(change.provider)})

    async def _get_outages(self, request: web.Request) -> web.Response:
        return _json({"outages": self.outages()})

    async def _post_outages(self, request: web.Request) -> web.Response:
        outage = _validated(Outage, await self._read_json(request), "outage")
        self.start_outage(outage.provider, outage.account)
        return _json({"outages": self.outages()})

    async def _delete_outages(self, request: web.Request) -> web.Response:
        provider = request.query.get("provider")
        self.end_outage(provider, request.query.get("account") if provider else None)
        return _json({"outages": self.outages()})

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json({"reset": True})
