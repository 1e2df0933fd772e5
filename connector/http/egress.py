"""Provider HTTP egress: which forward proxy and which CA bundle a request uses.

``http.proxy``/``http.ca_bundle`` are the default, an account's own ``proxy``/``ca_bundle``
apply to its ``base_url`` origin, and the standard proxy variables fill in where no proxy is
set. Decides only; the senders (``connector.http.sender``) apply it. Never logs a proxy URL.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import yarl

from connector.errors import AccountConfigError


@dataclass(frozen=True, slots=True)
class Egress:
    """How requests leave: through ``proxy`` (an ``http://`` forward proxy; ``https://`` targets
    are tunnelled with CONNECT) and trusting ``ca_bundle`` (PEM; None: the system store)."""

    proxy: str | None = None
    ca_bundle: Path | None = None

    def __repr__(self) -> str:  # a proxy URL may carry credentials
        return f"Egress(proxy={'set' if self.proxy else None}, ca_bundle={self.ca_bundle})"


# The adapters' plain requests carry a yarl URL; httpx requests an httpx one: both answer
# scheme, host and port.
AnyURL = httpx.URL | yarl.URL


def origin_of(url: AnyURL) -> str:
    """``scheme://host:port`` (the port spelled out) of ``url``."""
    return f"{url.scheme}://{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"


class EgressPlan:
    """Which ``Egress`` each request takes: the one of its origin (an account's ``base_url``
    with its own ``proxy``/``ca_bundle``), else the default (``http.proxy``/``http.ca_bundle``).
    Without an explicit proxy, the standard variables apply when ``proxy_from_env``:
    ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` (either case), minus ``NO_PROXY``.
    """

    def __init__(
        self,
        default: Egress | None = None,
        by_origin: Mapping[str, Egress] | None = None,
        *,
        proxy_from_env: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.default = default or Egress()
        self._by_origin = {origin_of(httpx.URL(o)): e for o, e in (by_origin or {}).items()}
        env = os.environ if environ is None else environ
        self._env: dict[str, str] = {}
        if proxy_from_env:
            for name in ("http", "https", "all", "no"):
                value = env.get(f"{name}_proxy") or env.get(f"{name.upper()}_PROXY")
                if value:
                    self._env[name] = value
        self._cache: dict[str, Egress] = {}

    def routes(self) -> set[Egress]:
        """Every configured egress (the default and the per-origin ones)."""
        return {self.default, *self._by_origin.values()}

    def for_url(self, url: AnyURL) -> Egress:
        origin = origin_of(url)
        found = self._cache.get(origin)
        if found is None:
            if len(self._cache) > 1024:  # origins are the accounts' hosts; stay bounded anyway
                self._cache.clear()
            found = self._cache[origin] = self._resolve(url, origin)
        return found

    def _resolve(self, url: AnyURL, origin: str) -> Egress:
        chosen = self._by_origin.get(origin, self.default)
        if chosen.proxy is not None:
            return chosen
        proxy = self._env.get(url.scheme) or self._env.get("all")
        if not proxy:
            return chosen
        port = url.port or (443 if url.scheme == "https" else 80)
        if _bypassed(url.host or "", port, self._env.get("no", "")):
            return chosen
        return Egress(proxy=proxy, ca_bundle=chosen.ca_bundle)


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (``*``, or names/suffixes with an optional ``:port``) covers it."""
    host = host.lower()
    for entry in no_proxy.replace(" ", "").lower().split(","):
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_bundle`` (else the system store)."""
    try:
        return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise AccountConfigError(
            f"http ca_bundle {ca_bundle} cannot be loaded ({type(exc).__name__})"
        ) from None


__all__ = ["Egress", "EgressPlan", "origin_of", "tls_context"]
