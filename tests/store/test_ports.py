from __future__ import annotations

import inspect

import pytest

from switchyard.core.ports import ConsoleSessionStore, KeyStore, UsageStore
from switchyard.store import SqlKeyStore, SqlUsageStore
from switchyard.store.console_sessions import SqlConsoleSessionStore


def _methods(cls: type) -> dict[str, list[tuple[str, object, object]]]:
    """Public async methods: parameter names, kinds and defaults (annotations are strings)."""
    return {
        name: [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]
        for name, member in vars(cls).items()
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    }


@pytest.mark.parametrize(("port", "impl"), [(KeyStore, SqlKeyStore), (UsageStore, SqlUsageStore),
                                                    (ConsoleSessionStore, SqlConsoleSessionStore)])
def test_store_matches_its_port_exactly(port: type, impl: type) -> None:
    wanted = _methods(port)
    assert wanted, port
    got = _methods(impl)
    for name, parameters in wanted.items():
        assert got.get(name) == parameters, f"{impl.__name__}.{name} differs from {port.__name__}.{name}"
