"""The buzzer channel on gpiozero's mock pins: a device call that fails once (a GPIO glitch) is counted by the
dispatcher, leaves ``sounding`` / ``lit`` as the device last took them, and the next event or ``fault`` drives
the device again ("fail toward the alarm")."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gpiozero import LED, Buzzer
from gpiozero.pins.mock import MockFactory

from alerts.channels.buzzer import BuzzerChannel
from alerts.dispatch import Dispatcher
from gateway.domain.events import AlarmEvent
from gateway.domain.vocab import AlarmEventType, AlarmKind, Priority
from gateway.settings import BuzzerConfig

BUZZER_PIN, LED_PIN = 18, 23


class GpioGlitchError(OSError):
    pass


def _alarm(
    alarm_id: str, type_: AlarmEventType = AlarmEventType.RAISED, priority: Priority = Priority.HIGH
) -> AlarmEvent:
    return AlarmEvent(
        seq=1,
        type=type_,
        alarm_id=alarm_id,
        kind=AlarmKind.CRIB_OPEN,
        priority=priority,
        site_id="site",
        room_id="room",
        crib_id="c-1",
        room_label="Room",
        crib_label="Crib 1",
        at=1.0,
        raised_at=1.0,
        run=1,
    )


def _fails_once(real: Callable[..., Any], calls: list[str]) -> Callable[..., Any]:
    """``real``, except that its first call raises :class:`GpioGlitchError`; ``calls`` records each outcome."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            calls.append("failed")
            raise GpioGlitchError("injected")
        calls.append("ok")
        return real(*args, **kwargs)

    return call


@pytest.fixture
def pins() -> MockFactory:
    return MockFactory()


@pytest.fixture
def channel(pins: MockFactory) -> Iterator[BuzzerChannel]:
    buzzer = BuzzerChannel(BuzzerConfig(pin=BUZZER_PIN, led_pin=LED_PIN, min_priority="medium"), pin_factory=pins)
    yield buzzer
    buzzer.close()


@pytest.fixture
def beeps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(Buzzer, "beep", _fails_once(Buzzer.beep, calls))
    return calls


@pytest.fixture
def led_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real: property = LED.value
    assert real.fset is not None
    monkeypatch.setattr(LED, "value", property(real.fget, _fails_once(real.fset, calls)))
    return calls


def test_a_beep_that_fails_once_is_counted_and_the_next_alarm_sounds(
    channel: BuzzerChannel, pins: MockFactory, beeps: list[str]
) -> None:
    dispatcher = Dispatcher([channel])
    dispatcher.dispatch([_alarm("a-1")])
    assert beeps == ["failed"]
    assert dispatcher.failures["buzzer"] == 1
    assert not channel.sounding  # the device never took the beep
    assert channel.lit  # the LED is driven all the same
    assert pins.pin(LED_PIN).state

    dispatcher.dispatch([_alarm("a-2")])
    assert beeps == ["failed", "ok"]
    assert channel.sounding
    assert dispatcher.failures["buzzer"] == 1


def test_a_beep_that_fails_once_is_retried_by_fault(channel: BuzzerChannel, beeps: list[str]) -> None:
    dispatcher = Dispatcher([channel])
    dispatcher.dispatch([_alarm("a-1")])
    assert not channel.sounding
    dispatcher.call(channel, "fault", channel.fault)
    assert beeps == ["failed", "ok"]
    assert channel.sounding
    assert dispatcher.failures["buzzer"] == 1


def test_a_fault_whose_beep_fails_is_counted_not_raised_and_any_later_event_sounds(
    channel: BuzzerChannel, beeps: list[str]
) -> None:
    dispatcher = Dispatcher([channel])
    dispatcher.call(channel, "fault", channel.fault)  # does not raise: the gateway's fault path goes on
    assert dispatcher.failures["buzzer"] == 1
    assert channel.faulted
    assert not channel.sounding
    dispatcher.dispatch([_alarm("a-low", priority=Priority.LOW)])  # would not sound by itself; the fault does
    assert beeps == ["failed", "ok"]
    assert channel.sounding


def test_an_led_write_that_fails_once_is_retried_by_the_next_event(
    channel: BuzzerChannel, pins: MockFactory, led_writes: list[str]
) -> None:
    dispatcher = Dispatcher([channel])
    dispatcher.dispatch([_alarm("a-1")])
    assert led_writes == ["failed"]
    assert dispatcher.failures["buzzer"] == 1
    assert channel.sounding  # the buzzer is driven all the same
    assert not channel.lit
    assert not pins.pin(LED_PIN).state

    dispatcher.dispatch([_alarm("a-1", AlarmEventType.ACKNOWLEDGED)])
    assert led_writes == ["failed", "ok"]
    assert channel.lit
    assert pins.pin(LED_PIN).state
    assert not channel.sounding  # acknowledged: silenced


def test_an_off_that_fails_leaves_sounding_true_and_is_retried(
    channel: BuzzerChannel, pins: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = Dispatcher([channel])
    dispatcher.dispatch([_alarm("a-1")])
    assert channel.sounding
    offs: list[str] = []
    monkeypatch.setattr(Buzzer, "off", _fails_once(Buzzer.off, offs))
    dispatcher.dispatch([_alarm("a-1", AlarmEventType.ACKNOWLEDGED)])
    assert offs == ["failed"]
    assert channel.sounding  # errs toward the alarm: the device may still be beeping
    dispatcher.dispatch([_alarm("a-1", AlarmEventType.RESOLVED)])
    assert offs == ["failed", "ok"]
    assert not channel.sounding
    assert not pins.pin(BUZZER_PIN).state
    assert dispatcher.failures["buzzer"] == 1


def test_a_failed_beep_is_retried_by_the_periodic_refresh_with_no_new_event(
    channel: BuzzerChannel, beeps: list[str]
) -> None:
    """The gateway's stats loop calls refresh(): a lone alarm whose beep failed still ends up sounding."""
    dispatcher = Dispatcher([channel])
    dispatcher.dispatch([_alarm("a-1")])
    assert not channel.sounding
    dispatcher.call(channel, "refresh", channel.refresh)
    assert beeps == ["failed", "ok"]
    assert channel.sounding
