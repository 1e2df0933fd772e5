"""Topic contracts (the packaged resources/topics.yaml): load and validate the spec, plan changes.

Owns the spec model and the planner `plan(spec, existing) -> TopicPlan`. It performs no I/O
beyond reading the spec file; talking to Kafka is `connector.kafka.admin`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Final, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

TopicName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,249}$")]

# Topic-level configs a spec may set; anything else is a typo until proven otherwise.
KNOWN_TOPIC_CONFIGS = frozenset(
    {
        "cleanup.policy",
        "compression.type",
        "delete.retention.ms",
        "max.compaction.lag.ms",
        "max.message.bytes",
        "message.timestamp.type",
        "min.cleanable.dirty.ratio",
        "min.compaction.lag.ms",
        "min.insync.replicas",
        "retention.bytes",
        "retention.ms",
        "segment.bytes",
        "segment.ms",
        "unclean.leader.election.enable",
    }
)
_CLEANUP_POLICIES = frozenset({"delete", "compact", "compact,delete", "delete,compact"})


class TopicSpecError(ValueError):
    """topics.yaml is not a valid topic contract."""


class TopicRole(StrEnum):
    INPUT = "input"
    OUTPUT = "output"
    STATE = "state"


def _config_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _stringify_configs(value: Any) -> Any:
    return {k: _config_value(v) for k, v in value.items()} if isinstance(value, dict) else value


# Topic configs as Kafka takes them: every value a string (YAML/TOML booleans lower-cased).
TopicConfigs = Annotated[dict[str, str], BeforeValidator(_stringify_configs)]


class TopicDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replication_factor: int = Field(default=3, ge=1)
    configs: TopicConfigs = Field(default_factory=dict)


class TopicSpec(BaseModel):
    """One topic as declared in the spec (configs already merged with the defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    logical_name: str
    name: TopicName
    role: TopicRole
    key: str
    value: str = ""
    partitions: int = Field(ge=1)
    replication_factor: int = Field(ge=1)
    co_partitioned_with: str | None = None
    configs: dict[str, str] = Field(default_factory=dict)


class _RawTopic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TopicName | None = None
    role: TopicRole
    key: str
    value: str = ""
    partitions: int | None = Field(default=None, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    co_partitioned_with: str | None = None
    configs: TopicConfigs = Field(default_factory=dict)


class _RawSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    defaults: TopicDefaults = Field(default_factory=TopicDefaults)
    topics: dict[str, _RawTopic]


class TopicsSpec(BaseModel):
    """All topics, keyed by logical name. Build it with `load_spec` or `TopicsSpec.parse`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topics: dict[str, TopicSpec]

    @model_validator(mode="after")
    def _check(self) -> Self:
        real_names = [t.name for t in self.topics.values()]
        if len(set(real_names)) != len(real_names):
            raise ValueError(f"two logical topics map to the same real name: {real_names}")
        for logical, topic in self.topics.items():
            if topic.logical_name != logical:
                raise ValueError(f"topic {logical!r} carries logical name {topic.logical_name!r}")
            unknown = set(topic.configs) - KNOWN_TOPIC_CONFIGS
            if unknown:
                raise ValueError(f"topic {logical!r}: unknown config keys {sorted(unknown)}")
            policy = topic.configs.get("cleanup.policy", "delete")
            if policy not in _CLEANUP_POLICIES:
                raise ValueError(f"topic {logical!r}: cleanup.policy {policy!r} is not valid")
            min_isr = int(topic.configs.get("min.insync.replicas", "1"))
            if min_isr > topic.replication_factor:
                raise ValueError(
                    f"topic {logical!r}: min.insync.replicas {min_isr} exceeds replication "
                    f"factor {topic.replication_factor} (no acks=all write could succeed)"
                )
            if topic.co_partitioned_with is not None:
                other = self.topics.get(topic.co_partitioned_with)
                if other is None:
                    raise ValueError(
                        f"topic {logical!r} is co-partitioned with unknown topic "
                        f"{topic.co_partitioned_with!r}"
                    )
                if other.partitions != topic.partitions:
                    raise ValueError(
                        f"topic {logical!r} has {topic.partitions} partitions but is "
                        f"co-partitioned with {other.logical_name!r} ({other.partitions})"
                    )
        return self

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> TopicsSpec:
        """Validate a decoded topics.yaml document; defaults and co-partitioning are resolved."""
        raw = _RawSpec.model_validate(document)
        if raw.version != 1:
            raise ValueError(f"unsupported topics spec version {raw.version}")
        resolved: dict[str, TopicSpec] = {}
        pending = dict(raw.topics)
        while pending:
            progressed = False
            for logical, topic in list(pending.items()):
                partitions = topic.partitions
                if topic.co_partitioned_with is not None:
                    if topic.co_partitioned_with not in raw.topics:
                        raise ValueError(
                            f"topic {logical!r} is co-partitioned with unknown topic "
                            f"{topic.co_partitioned_with!r}"
                        )
                    source = resolved.get(topic.co_partitioned_with)
                    if source is None:
                        continue
                    partitions = partitions or source.partitions
                if partitions is None:
                    raise ValueError(f"topic {logical!r} declares no partitions")
                resolved[logical] = TopicSpec(
                    logical_name=logical,
                    name=topic.name or logical,
                    role=topic.role,
                    key=topic.key,
                    value=topic.value,
                    partitions=partitions,
                    replication_factor=topic.replication_factor or raw.defaults.replication_factor,
                    co_partitioned_with=topic.co_partitioned_with,
                    configs={**raw.defaults.configs, **topic.configs},
                )
                del pending[logical]
                progressed = True
            if not progressed:
                raise ValueError(f"co-partitioning cycle among {sorted(pending)}")
        return cls(topics=resolved)

    def name_of(self, logical_name: str) -> str:
        """The real topic name for a logical one (KeyError if the spec has no such topic)."""
        return self.topics[logical_name].name

    def with_names(self, names: Mapping[str, str]) -> TopicsSpec:
        """A copy where the given logical names map to the given real names."""
        unknown = set(names) - set(self.topics)
        if unknown:
            raise KeyError(f"no such logical topics: {sorted(unknown)}")
        return TopicsSpec(
            topics={
                logical: topic.model_copy(update={"name": names.get(logical, topic.name)})
                for logical, topic in self.topics.items()
            }
        )

    def with_affixes(self, *, prefix: str = "", suffix: str = "") -> TopicsSpec:
        """A copy with every real name wrapped as prefix + name + suffix (tests use this)."""
        return self.with_names(
            {logical: f"{prefix}{t.name}{suffix}" for logical, t in self.topics.items()}
        )

    def with_replication_factor(self, replication_factor: int) -> TopicsSpec:
        """A copy for a cluster of another size; min.insync.replicas is capped at the factor."""
        topics: dict[str, TopicSpec] = {}
        for logical, topic in self.topics.items():
            configs = dict(topic.configs)
            if "min.insync.replicas" in configs:
                configs["min.insync.replicas"] = str(
                    min(int(configs["min.insync.replicas"]), replication_factor)
                )
            topics[logical] = topic.model_copy(
                update={"replication_factor": replication_factor, "configs": configs}
            )
        return TopicsSpec(topics=topics)


# The spec shipped inside the package (wheel or checkout alike), read through importlib.resources.
PACKAGED_SPEC: Final[Traversable] = files("connector.contract") / "resources" / "topics.yaml"


def load_spec(path: Path | Traversable | None = None) -> TopicsSpec:
    """Read and validate a topics.yaml file; without a path, the spec shipped in the package."""
    source = PACKAGED_SPEC if path is None else path
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise TopicSpecError(f"{source}: expected a mapping at the top level")
    return TopicsSpec.parse(document)


class TopicState(BaseModel):
    """What the cluster says about one existing topic."""

    model_config = ConfigDict(frozen=True)

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = Field(default_factory=dict)  # effective values, defaults included
    overrides: dict[str, str] = Field(default_factory=dict)  # values set on the topic itself


class DriftKind(StrEnum):
    PARTITIONS = "partitions"
    REPLICATION_FACTOR = "replication_factor"
    CONFIG = "config"


class Drift(BaseModel):
    """One difference between the spec and an existing topic."""

    model_config = ConfigDict(frozen=True)

    topic: str
    kind: DriftKind
    key: str
    expected: str
    actual: str | None
    fixable: bool  # `apply --fix-drift` may change it (configs); partitions/RF need a human


class TopicPlan(BaseModel):
    """What applying a spec would do (or did, when `dry_run` is False)."""

    model_config = ConfigDict(frozen=True)

    creates: tuple[TopicSpec, ...] = ()
    drifts: tuple[Drift, ...] = ()
    unchanged: tuple[str, ...] = ()
    dry_run: bool = True
    fixed: tuple[Drift, ...] = ()  # drifts that apply changed on the cluster

    @property
    def is_noop(self) -> bool:
        """True when the cluster already matches the spec: nothing to create, no drift."""
        return not self.creates and not self.drifts


def same_config_value(key: str, expected: str, actual: str | None) -> bool:
    """Whether a broker's config value satisfies the spec's (list-valued keys ignore order)."""
    if actual is None:
        return False
    if key == "cleanup.policy":  # a list: "compact,delete" equals "delete,compact"
        return set(expected.replace(" ", "").split(",")) == set(actual.replace(" ", "").split(","))
    return expected == actual


def plan(spec: TopicsSpec, existing: Mapping[str, TopicState]) -> TopicPlan:
    """Compare the spec with the cluster's topics (keyed by real name). Pure."""
    creates: list[TopicSpec] = []
    drifts: list[Drift] = []
    unchanged: list[str] = []
    for topic in spec.topics.values():
        state = existing.get(topic.name)
        if state is None:
            creates.append(topic)
            continue
        found: list[Drift] = []
        # Partitions and replication factor: attributes named like their drift kind.
        for kind in (DriftKind.PARTITIONS, DriftKind.REPLICATION_FACTOR):
            want, have = getattr(topic, kind.value), getattr(state, kind.value)
            if have != want:
                found.append(
                    Drift(
                        topic=topic.name,
                        kind=kind,
                        key=kind.value,
                        expected=str(want),
                        actual=str(have),
                        fixable=False,
                    )
                )
        for key, expected in sorted(topic.configs.items()):
            actual = state.configs.get(key)
            if not same_config_value(key, expected, actual):
                found.append(
                    Drift(
                        topic=topic.name,
                        kind=DriftKind.CONFIG,
                        key=key,
                        expected=expected,
                        actual=actual,
                        fixable=True,
                    )
                )
        if found:
            drifts.extend(found)
        else:
            unchanged.append(topic.name)
    return TopicPlan(creates=tuple(creates), drifts=tuple(drifts), unchanged=tuple(unchanged))


def render_plan(plan: TopicPlan) -> str:
    """Human-readable plan for the CLI, one line per topic change plus a summary. Pure."""
    lines: list[str] = []
    for topic in plan.creates:
        configs = " ".join(f"{k}={v}" for k, v in sorted(topic.configs.items()))
        verb = "would create" if plan.dry_run else "created"
        lines.append(
            f"{verb:<13}{topic.name} partitions={topic.partitions} "
            f"replication_factor={topic.replication_factor} {configs}".rstrip()
        )
    fixed = set(plan.fixed)
    for drift in plan.drifts:
        if drift in fixed:
            status = "fixed"
        elif drift.fixable:
            status = "fixable with --fix-drift"
        else:
            status = "needs a human: not changed automatically"
        lines.append(
            f"{'drift':<13}{drift.topic} {drift.key}: expected {drift.expected}, "
            f"found {drift.actual if drift.actual is not None else '(unset)'} ({status})"
        )
    lines.extend(f"{'ok':<13}{name}" for name in plan.unchanged)
    mode = " (dry run)" if plan.dry_run else ""
    lines.append(
        f"{len(plan.creates)} to create, {len(plan.drifts)} drifted, "
        f"{len(plan.unchanged)} unchanged{mode}"
    )
    return "\n".join(lines)
