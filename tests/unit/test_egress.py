"""Provider HTTP egress (issue 14): ``http.proxy``, the standard proxy variables,
``http.ca_bundle`` and per-account overrides, for both senders, over loopback sockets: a tiny
forward proxy written here and a TLS endpoint whose CA is generated at test time."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connector.config import load_config
from connector.errors import ConfigError, TransportFailure
from connector.http.egress import Egress, EgressPlan
from connector.http.sender import HttpClientKind, create_sender

# ----------------------------------------------------------------------------- certificates


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("egress test CA"))
        .issuer_name(_name("egress test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


# ----------------------------------------------------------------------------- servers


@dataclass
class ForwardProxy:
    """A tiny HTTP forward proxy on loopback: absolute-form requests and CONNECT tunnels."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
            self.seen.append((method, target))
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                url = urlsplit(target)
                assert url.hostname is not None
                up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
                origin_form = (url.path or "/") + (f"?{url.query}" if url.query else "")
                up_writer.write(head.replace(target.encode(), origin_form.encode(), 1))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    finally:
        sink.close()


@dataclass
class Servers:
    plain: str  # http://127.0.0.1:P
    tls: str  # https://127.0.0.1:P (certificate from the test CA)
    ca: Path
    proxy: ForwardProxy
    hits: list[str]


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    hits: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        hits.append(f"{request.scheme}:{request.path}")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    plain_sock, tls_sock = bound_socket(), bound_socket()
    await web.SockSite(runner, plain_sock).start()
    await web.SockSite(runner, tls_sock, ssl_context=tls).start()
    proxy = ForwardProxy()
    proxy_server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.port = proxy_server.sockets[0].getsockname()[1]
    try:
        yield Servers(
            plain=f"http://127.0.0.1:{plain_sock.getsockname()[1]}",
            tls=f"https://127.0.0.1:{tls_sock.getsockname()[1]}",
            ca=ca,
            proxy=proxy,
            hits=hits,
        )
    finally:
        await proxy.close()
        proxy_server.close()
        await runner.cleanup()


async def post(kind: HttpClientKind, plan: EgressPlan, url: str) -> httpx.Response:
    async with create_sender(kind, max_connections=4, egress=plan) as sender:
        with anyio.fail_after(10):
            return await sender.send(httpx.Request("POST", url, content=b"{}"), timeout=5)


CLIENTS: list[HttpClientKind] = ["aiohttp", "httpx", "native"]
NO_ENV: dict[str, str] = {}

# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", CLIENTS)
async def test_ca_bundle_makes_a_private_ca_trusted(kind: HttpClientKind, servers: Servers) -> None:
    with pytest.raises(TransportFailure) as info:
        await post(kind, EgressPlan(environ=NO_ENV), servers.tls + "/a")
    assert info.value.kind == "tls"
    plan = EgressPlan(Egress(ca_bundle=servers.ca), environ=NO_ENV)
    assert (await post(kind, plan, servers.tls + "/a")).status_code == 200
    assert servers.hits == ["https:/a"]


@pytest.mark.parametrize("kind", CLIENTS)
async def test_http_proxy_forwards_plain_and_tunnels_tls(
    kind: HttpClientKind, servers: Servers
) -> None:
    plan = EgressPlan(Egress(proxy=servers.proxy.url, ca_bundle=servers.ca), environ=NO_ENV)
    assert (await post(kind, plan, servers.plain + "/p")).status_code == 200
    assert (await post(kind, plan, servers.tls + "/t")).status_code == 200
    assert servers.proxy.seen == [
        ("POST", servers.plain + "/p"),
        ("CONNECT", servers.tls.removeprefix("https://")),
    ]
    assert servers.hits == ["http:/p", "https:/t"]


@pytest.mark.parametrize("kind", CLIENTS)
async def test_per_origin_override_goes_through_the_proxy_and_the_rest_goes_direct(
    kind: HttpClientKind, servers: Servers
) -> None:
    plan = EgressPlan(
        Egress(), {servers.tls: Egress(proxy=servers.proxy.url, ca_bundle=servers.ca)},
        environ=NO_ENV,
    )  # fmt: skip
    async with create_sender(kind, max_connections=4, egress=plan) as sender:
        with anyio.fail_after(10):
            for url in (servers.tls + "/account", servers.plain + "/other"):
                answer = await sender.send(httpx.Request("POST", url, content=b"{}"), timeout=5)
                assert answer.status_code == 200
    assert servers.proxy.seen == [("CONNECT", servers.tls.removeprefix("https://"))]
    assert servers.hits == ["https:/account", "http:/other"]


@pytest.mark.parametrize("kind", CLIENTS)
async def test_standard_proxy_variables_apply_minus_no_proxy(
    kind: HttpClientKind, servers: Servers
) -> None:
    env = {"http_proxy": servers.proxy.url, "NO_PROXY": "localhost,.internal"}
    assert (await post(kind, EgressPlan(environ=env), servers.plain + "/env")).status_code == 200
    assert servers.proxy.seen == [("POST", servers.plain + "/env")]
    bypass = {**env, "NO_PROXY": "127.0.0.1"}
    assert (await post(kind, EgressPlan(environ=bypass), servers.plain + "/no")).status_code == 200
    off = EgressPlan(proxy_from_env=False, environ=env)
    assert (await post(kind, off, servers.plain + "/off")).status_code == 200
    assert len(servers.proxy.seen) == 1
    assert servers.hits == ["http:/env", "http:/no", "http:/off"]


def test_plan_resolution() -> None:
    env = {"HTTPS_PROXY": "http://corp:3128", "no_proxy": "internal.example:8443,.lan"}
    plan = EgressPlan(
        Egress(ca_bundle=Path("/ca.pem")),
        {"https://graph.facebook.com": Egress(proxy="http://meta-proxy:3128")},
        environ=env,
    )
    assert plan.for_url(httpx.URL("https://graph.facebook.com/v21.0/x")) == Egress(
        proxy="http://meta-proxy:3128"
    )
    assert plan.for_url(httpx.URL("https://api.ycloud.com/v2")) == Egress(
        "http://corp:3128", Path("/ca.pem")
    )
    assert plan.for_url(httpx.URL("https://internal.example:8443/")).proxy is None
    assert plan.for_url(httpx.URL("https://internal.example/")).proxy == "http://corp:3128"
    assert plan.for_url(httpx.URL("https://box.lan/")).proxy is None
    assert plan.for_url(httpx.URL("http://plain.example/")).proxy is None  # no HTTP_PROXY
    assert "corp" not in repr(plan.for_url(httpx.URL("https://api.ycloud.com")))


ACCOUNTS = """
accounts:
  - {provider: zonos, name: z1, store: '1', secret: env:Z, base_url: 'https://zonos.example'}
  - {provider: zonos, name: z2, store: '2', secret: env:Z, base_url: 'https://other.example',
     proxy: 'http://account-proxy:8080'}
"""


def test_config_builds_the_plan_with_account_overrides(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    make_ca_and_server_cert(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(ACCOUNTS + f"http:\n  proxy: http://corp:3128\n  ca_bundle: {ca}\n")
    plan = load_config(path, {"Z": "zz"}).egress_plan(environ={})
    assert plan.for_url(httpx.URL("https://zonos.example/x")) == Egress("http://corp:3128", ca)
    assert plan.for_url(httpx.URL("https://other.example/x")) == Egress(
        "http://account-proxy:8080", ca
    )


def test_config_refuses_conflicting_egress_on_one_host_and_unloadable_bundles(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ACCOUNTS.replace("https://other.example", "https://zonos.example/v2"))
    with pytest.raises(ConfigError, match=r"accounts z1 and z2 send to https://zonos\.example:443"):
        load_config(path, {"Z": "zz"})
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    path.write_text(ACCOUNTS + f"http:\n  ca_bundle: {bad}\n")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_config(path, {"Z": "zz"})
    path.write_text(ACCOUNTS + f"http:\n  ca_bundle: {tmp_path / 'missing.pem'}\n")
    with pytest.raises(ConfigError, match=r"http\.ca_bundle: Path does not point to a file"):
        load_config(path, {"Z": "zz"})
