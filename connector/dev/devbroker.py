"""A real single-node Kafka (KRaft) broker for tests, the demo and benchmarks, from Maven jars.

Owns fetching the broker jars (the packaged resources/kafka-pom.xml), starting/stopping the JVM
and choosing which cluster to use (`select_kafka`). It must not be used by the production
daemon, which is given its bootstrap servers by configuration.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import IO, Final

DEFAULT_KAFKA_VERSION: Final = "4.4.0"
BOOTSTRAP_ENV: Final = "ORDER_CONNECTOR_BOOTSTRAP_SERVERS"
LAUNCHER_ENV: Final = "ORDER_CONNECTOR_KAFKA_LAUNCHER"  # auto | local | testcontainers
CACHE_ENV: Final = "ORDER_CONNECTOR_CACHE_DIR"
POM_ENV: Final = "ORDER_CONNECTOR_KAFKA_POM"
TESTCONTAINERS_IMAGE: Final = "confluentinc/cp-kafka:7.9.0"

_COMPLETE_MARKER = ".complete"
_PR_SET_PDEATHSIG = 1


class DevBrokerError(RuntimeError):
    """The development broker could not be fetched, started or stopped."""


def default_cache_dir() -> Path:
    """Where fetched jars live: $ORDER_CONNECTOR_CACHE_DIR, else $XDG_CACHE_HOME/order-connector."""
    if explicit := os.environ.get(CACHE_ENV):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "order-connector"


# The broker's Maven descriptor ships in the package, so a plain wheel install can fetch jars.
PACKAGED_POM: Final = files("connector.dev") / "resources" / "kafka-pom.xml"
_NEEDS = (
    "the local development broker needs Maven (mvn) to fetch the Kafka jars and a JDK 17+ "
    "(java) to run them; install both (Debian: apt-get install maven openjdk-17-jdk-headless), "
    f"or name an existing cluster with {BOOTSTRAP_ENV}=host:9092"
)


def _pom_digest(pom: Path, version: str) -> str:
    digest = hashlib.sha256(pom.read_bytes())
    digest.update(version.encode())
    return digest.hexdigest()


def ensure_jars(
    version: str = DEFAULT_KAFKA_VERSION,
    *,
    cache_dir: Path | None = None,
    maven_repo: Path | None = None,
    pom: Path | None = None,
) -> Path:
    """Return a directory of broker jars for `version`, running Maven once if it is not cached.

    The cache is keyed by version and by the pom's content; a concurrent caller waits on a file
    lock instead of downloading twice. `maven_repo` overrides Maven's local repository.
    """
    if pom is None and (explicit := os.environ.get(POM_ENV)):
        pom = Path(explicit)
    if pom is None:
        with as_file(PACKAGED_POM) as packaged:
            return ensure_jars(version, cache_dir=cache_dir, maven_repo=maven_repo, pom=packaged)
    if not pom.is_file():
        raise DevBrokerError(f"Kafka pom not found at {pom} (set {POM_ENV})")
    home = (cache_dir or default_cache_dir()) / f"kafka-{version}"
    home.mkdir(parents=True, exist_ok=True)
    lib = home / "lib"
    marker = home / _COMPLETE_MARKER
    wanted = _pom_digest(pom, version)
    if marker.is_file() and marker.read_text() == wanted and lib.is_dir():
        return lib
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == wanted and lib.is_dir():
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise DevBrokerError(f"Maven (mvn) is not on PATH: {_NEEDS}")
        staging = Path(tempfile.mkdtemp(prefix="lib-", dir=home))
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        if maven_repo is not None:
            command.append(f"-Dmaven.repo.local={maven_repo}")
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise DevBrokerError(
                f"Maven failed to fetch Kafka {version} (exit {done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        marker.unlink(missing_ok=True)
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        marker.write_text(wanted)
    return lib


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1", *, besides: Collection[int] = ()) -> list[int]:
    """`count` distinct TCP ports on `host`, none in `besides`, that nothing listens on now.

    The sockets stay bound until all are picked: ports asked for one after another may come
    back equal (the kernel can hand a just-released port out again), and a broker whose
    client and controller listeners share a port does not start."""
    ports: list[int] = []
    with contextlib.ExitStack() as bound:
        while len(ports) < count:
            sock = bound.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            if port not in besides:
                ports.append(port)
    return ports


def _kafka_string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def broker_is_serving(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when a Kafka broker at host:port answers Metadata with at least one live broker.

    Speaks Metadata v1 over a plain socket so that readiness needs no event loop.
    """
    correlation_id = 7
    body = struct.pack(">hhi", 3, 1, correlation_id) + _kafka_string("devbroker-probe")
    body += struct.pack(">i", 0)  # v1: an empty topic list asks for brokers only
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", header)
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    if len(payload) < 8:
        return False
    got_id, broker_count = struct.unpack(">ii", payload[:8])
    return bool(got_id == correlation_id and broker_count > 0)


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.extend(chunk)
    return bytes(chunks)


def _server_properties(
    *, node_id: int, port: int, controller_port: int, log_dir: Path, auto_create_topics: bool
) -> dict[str, str]:
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": f"{node_id}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "auto.create.topics.enable": str(auto_create_topics).lower(),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        # Fewer internal partitions: the first group/transaction creates them, so this is
        # what the first test waits for.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # A 2-core machine shared with other work: few threads, small cleaner buffer.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        "log.cleaner.backoff.ms": "1000",
    }


_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGTERM the JVM when the thread that started it dies (e.g. pytest killed)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_LIVE: weakref.WeakSet[LocalKafka] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.stop()


atexit.register(_stop_all_at_exit)


@dataclass(frozen=True)
class BrokerTimings:
    """Seconds spent in each phase of the last `start()`."""

    jars_s: float
    format_s: float
    ready_s: float


class LocalKafka:
    """A single-node KRaft broker+controller JVM on loopback.

    `start()` returns the bootstrap servers ("127.0.0.1:PORT"); `stop(keep_data=True)` followed
    by `start()` brings the same broker back on the same port with the same data. The JVM runs in
    its own process group and is stopped on `stop()`, at interpreter exit, and (Linux) when the
    starting thread dies. Broker logs go to `<data_dir>/broker.log`.
    """

    def __init__(
        self,
        *,
        version: str = DEFAULT_KAFKA_VERSION,
        cache_dir: Path | None = None,
        maven_repo: Path | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        heap: str = "512m",
        startup_timeout_s: float = 90.0,
        auto_create_topics: bool = False,
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        self.version = version
        self._cache_dir = cache_dir
        self._maven_repo = maven_repo
        self._owns_data_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="order-connector-kafka-"))
        if not port:
            self.port, self.controller_port = free_ports(2)
        else:
            self.port, self.controller_port = port, free_ports(1, besides={port})[0]
        self._heap = heap
        self._startup_timeout_s = startup_timeout_s
        self._auto_create_topics = auto_create_topics
        self._extra = dict(extra_properties or {})
        self._cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._paused = False
        self.last_timings: BrokerTimings | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").is_file():
            return str(Path(java_home) / "bin" / "java")
        java = shutil.which("java")
        if java is None:
            raise DevBrokerError(f"java is not on PATH: {_NEEDS}")
        return java

    def _jvm(self, lib: Path, main_class: str, *args: str, heap: str) -> list[str]:
        return [
            self._java(),
            f"-Xmx{heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            main_class,
            *args,
        ]

    def _write_config(self) -> Path:
        props = _server_properties(
            node_id=1,
            port=self.port,
            controller_port=self.controller_port,
            log_dir=self.data_dir / "kraft-logs",
            auto_create_topics=self._auto_create_topics,
        )
        props.update(self._extra)
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(log_file=self.log_file))
        return config

    def start(self) -> str:
        """Start (or restart, keeping data) the broker; return once a client can use it."""
        if self.is_running():
            return self.bootstrap_servers
        began = time.monotonic()
        lib = ensure_jars(self.version, cache_dir=self._cache_dir, maven_repo=self._maven_repo)
        jars_done = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "kraft-logs" / "meta.properties").is_file():
            formatted = subprocess.run(  # noqa: S603
                self._jvm(
                    lib,
                    "kafka.tools.StorageTool",
                    "format",
                    # "=" form: a base64 id may start with "-" and look like an option.
                    f"--cluster-id={self._cluster_id}",
                    f"--config={config}",
                    "--ignore-formatted",
                    heap="256m",
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if formatted.returncode != 0:
                raise DevBrokerError(
                    f"kafka-storage format failed (exit {formatted.returncode}):\n"
                    f"{formatted.stdout[-2000:]}{formatted.stderr[-2000:]}"
                )
        format_done = time.monotonic()
        self._stdout = (self.data_dir / "jvm-stdout.log").open("ab")
        use_pdeathsig = threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(  # noqa: S603
            self._jvm(lib, "kafka.Kafka", str(config), heap=self._heap),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if use_pdeathsig else None,  # noqa: PLW1509
        )
        _LIVE.add(self)
        try:
            self._wait_ready(deadline=time.monotonic() + self._startup_timeout_s)
        except BaseException:
            self.stop(keep_data=True)
            raise
        ready_done = time.monotonic()
        self.last_timings = BrokerTimings(
            jars_s=jars_done - began,
            format_s=format_done - jars_done,
            ready_s=ready_done - format_done,
        )
        return self.bootstrap_servers

    def _wait_ready(self, *, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise DevBrokerError(
                    f"Kafka broker exited during startup; see {self.log_file}:\n{self._log_tail()}"
                )
            if broker_is_serving("127.0.0.1", self.port, timeout_s=1.0):
                return
            time.sleep(0.1)
        raise DevBrokerError(
            f"Kafka broker not ready within {self._startup_timeout_s}s; see {self.log_file}:\n"
            f"{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 30) -> str:
        texts = []
        for path in (self.data_dir / "jvm-stdout.log", self.log_file):
            if path.is_file():
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts)

    def pause_broker(self) -> None:
        """Freeze the JVM (SIGSTOP): connections hang instead of being refused."""
        if self._process is None or not self.is_running():
            raise DevBrokerError("broker is not running")
        os.killpg(self._process.pid, signal.SIGSTOP)
        self._paused = True

    def resume_broker(self) -> None:
        """Undo `pause_broker` (SIGCONT)."""
        if self._process is not None and self._paused:
            os.killpg(self._process.pid, signal.SIGCONT)
        self._paused = False

    def stop(self, *, keep_data: bool = False, timeout_s: float = 15.0) -> None:
        """SIGTERM the broker's process group, SIGKILL after `timeout_s`; idempotent.

        With keep_data=False a data dir this object created is deleted.
        """
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                if self._paused:
                    os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout_s)
            # The JVM may leave children in its group only in exotic setups; make sure.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        self._paused = False
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None
        _LIVE.discard(self)
        if not keep_data and self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connector.dev.devbroker", description="Local Kafka broker for development."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download the broker jars into the cache (idempotent)")
    run = sub.add_parser("run", help="start a broker and keep it running until Ctrl-C")
    for command in (fetch, run):
        command.add_argument("--version", default=DEFAULT_KAFKA_VERSION)
        command.add_argument("--cache-dir", type=Path, default=None)
    fetch.add_argument("--maven-repo", type=Path, default=None)
    run.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        lib = ensure_jars(args.version, cache_dir=args.cache_dir, maven_repo=args.maven_repo)
        print(lib)
        return 0
    broker = LocalKafka(version=args.version, cache_dir=args.cache_dir, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        print(broker.start(), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
