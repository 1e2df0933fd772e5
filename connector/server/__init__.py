"""The daemon's HTTP server: webhooks, health and readiness, Prometheus metrics."""
