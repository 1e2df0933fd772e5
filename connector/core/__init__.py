"""Pure rules without I/O: ordering lanes and watermarks, retry policy, rate limits,
ledger verdicts, backpressure, redaction.
"""
