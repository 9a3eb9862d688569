"""The cooldown circuit on an injected clock. Through the pipeline (what fails an upstream, what
does not, the probe) it is tested in tests/service/test_gateway.py."""

from __future__ import annotations

import pytest

from switchyard.errors import ServiceUnavailableError
from switchyard.service.cooldown import CooldownPolicy, Cooldowns


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_outside_the_window_do_not_add_up_and_a_failed_probe_cools_again() -> None:
    clock = FakeClock()
    changes: list[tuple[str, bool]] = []
    cd = Cooldowns({"u": CooldownPolicy(failures=3, window=10, cooldown=5)},
                   on_change=lambda u, c: changes.append((u, c)), clock=clock)
    for _ in range(2):
        cd.record("u", ok=False)
    clock.now += 11  # those two are now outside the window
    cd.record("u", ok=False)
    assert cd.admit("u") is False and changes == []
    cd.record("u", ok=False)
    cd.record("u", ok=False)  # three within the window
    assert changes == [("u", True)]
    with pytest.raises(ServiceUnavailableError):
        cd.admit("u")
    clock.now += 5
    assert cd.admit("u") is True  # the one probe
    with pytest.raises(ServiceUnavailableError):
        cd.admit("u")  # nobody else while it is out
    cd.record("u", ok=False, probe=True)
    assert changes[-1] == ("u", True) and cd.remaining("u") == 5
    clock.now += 5
    assert cd.admit("u") is True
    cd.record("u", ok=True, probe=True)
    assert changes[-1] == ("u", False) and cd.admit("u") is False


def test_panic_is_reported_until_a_success_closes_the_breaker_and_a_failure_in_panic_cools_again() -> None:
    clock = FakeClock()
    panics: list[tuple[str, bool]] = []
    changes: list[tuple[str, bool]] = []
    cd = Cooldowns({"u": CooldownPolicy(failures=1, window=10, cooldown=5)}, clock=clock,
                   on_change=lambda u, c: changes.append((u, c)), on_panic=lambda u, p: panics.append((u, p)))
    cd.panic("u")  # closed: nothing to report
    assert panics == [] and cd.state("u") == "closed" and cd.report() == {}
    cd.record("u", ok=False)
    assert cd.state("u") == "open" and cd.last_failure("u") == 1000.0
    clock.now += 3
    cd.panic("u")
    cd.panic("u")
    assert panics == [("u", True)] and cd.report() == {"u": {"state": "panic", "cooldown_s": 2.0}}
    cd.record("u", ok=False, panic=True)  # still failing: the cooldown starts again from now
    assert cd.remaining("u") == 5 and cd.last_failure("u") == 1003.0 and changes == [("u", True)]
    cd.record("u", ok=True, panic=True)
    assert panics[-1] == ("u", False) and changes[-1] == ("u", False) and cd.state("u") == "closed"
