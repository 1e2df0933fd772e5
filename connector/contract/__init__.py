"""Wire contracts: the input event, the result and error records, their JSON Schemas and
the topic spec.
"""
