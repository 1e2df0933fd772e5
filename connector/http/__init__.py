"""The one place that sends provider HTTP requests."""
