"""order-status-connector: Kafka order-status events to provider order-status requests."""

__version__ = "0.1.0"
