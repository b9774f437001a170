"""The clock seam: wall time by default, the driver's instant inside `simulating`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.kit import clock
from flows.kit.settings import PlaybookSettings, playbook_settings, using_playbook_settings

T = datetime(2025, 3, 4, 21, 30, tzinfo=UTC)


def test_wall_clock_outside_a_simulation() -> None:
    before = datetime.now(UTC)
    assert before <= clock.now() <= datetime.now(UTC)
    assert clock.simulated() is None


def test_the_simulated_instant_is_every_reader_s_now() -> None:
    with clock.simulating(T) as sim:
        assert clock.now() == T
        assert PlaybookSettings(clock=None).now() == T  # the gate's clock
        sim.advance(T + timedelta(days=3))
        assert clock.now() == T + timedelta(days=3)
        sim.advance(T)  # never back
        assert clock.now() == T + timedelta(days=3)
    assert clock.simulated() is None


def test_a_fixed_gate_clock_still_wins() -> None:
    fixed = datetime(2024, 1, 1, tzinfo=UTC)
    with clock.simulating(T):
        assert PlaybookSettings(clock=fixed).now() == fixed


def test_given_playbook_settings_replace_the_environment_s() -> None:
    given = PlaybookSettings(frequency_cap=5)
    with using_playbook_settings(given):
        assert playbook_settings() is given
    assert playbook_settings() is not given
