"""The daemon's registry carries process, Python and build-info series (issue 14)."""

from __future__ import annotations

import platform

from connector.server.metrics import ConnectorMetrics, connector_version


def test_process_python_and_build_info_series_are_exported() -> None:
    text = ConnectorMetrics().render().decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names
    assert {"process_open_fds", "process_start_time_seconds", "python_info"} <= names
    assert "python_gc_collections_total" in names
    version = connector_version()
    assert version != "unknown"  # the package is installed (editable) in every test run
    assert (
        f'connector_build_info{{python="{platform.python_version()}",version="{version}"}} 1.0'
        in text
    )


def test_two_registries_each_export_the_process_series() -> None:
    first, second = ConnectorMetrics(), ConnectorMetrics()
    for metrics in (first, second):
        assert b"process_cpu_seconds_total" in metrics.render()
