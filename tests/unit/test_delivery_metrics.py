"""EngineMetrics turns the engine's observer hooks into the Prometheus series they promise."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from connector.kafka.consumer import TP
from connector.server.delivery_metrics import EngineMetrics
from connector.server.metrics import ConnectorMetrics


def samples(metrics: ConnectorMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_an_invalid_event_outcome_counts_as_an_invalid_event_of_the_input_topic() -> None:
    metrics = ConnectorMetrics()
    observer = EngineMetrics(metrics)
    for offset in range(3):
        observer.record_consumed(TP("orders.in", offset % 2))
    observer.outcome("none", "none", "invalid_event")
    observer.outcome("none", "none", "invalid_event")
    observer.outcome("meta", "meta-br", "accepted")
    observer.outcome("none", "none", "unroutable")

    assert samples(metrics, "connector_invalid_events_total") == {
        (("kind", "invalid_event"), ("topic", "orders.in")): 2.0
    }
    outcomes = samples(metrics, "connector_outcomes_total")
    assert outcomes[(("account", "none"), ("outcome", "invalid_event"), ("provider", "none"))] == 2
    assert sum(outcomes.values()) == 4
