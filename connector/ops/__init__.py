"""Operator commands: replay, redrive, topic management."""
