"""Nothing on the alarm path waits (issue 10, item 3): when the core raises an alarm, its bytes are on the MQTT
socket and the buzzer sounds before the store's writer, the log line or any other channel gets it. Against the real
Mosquitto, in the running gateway."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gpiozero.pins.mock import MockFactory

from alerts.channels.buzzer import BuzzerChannel
from alerts.channels.log import LogChannel
from alerts.channels.mqtt import MqttChannel
from alerts.channels.router import ChannelRouter
from devtools.brokers import BrokerEndpoint
from gateway.domain.events import LatchReading, OutboundEvent
from gateway.domain.vocab import LatchState, Source
from gateway.store.recorder import StoreRecorder
from gateway.web.live import BoardChanges
from tests.test_gateway_integration import make_settings, running


class Watched:
    """A channel whose deliveries are noted, with what was true of the socket and the buzzer right after."""

    def __init__(self, inner: Any, notes: list[tuple[str, str, bool, bool]], state: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self._notes = notes
        self._state = state

    def deliver(self, event: OutboundEvent) -> None:
        self.inner.deliver(event)
        written, sounding = self._state()
        self._notes.append((type(self.inner).__name__, type(event).__name__, written, sounding))

    def close(self) -> None:
        self.inner.close()


async def test_an_alarm_is_on_the_socket_and_the_buzzer_before_the_record_and_the_log(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    settings = make_settings(mqtt_endpoint)
    async with running(settings, MockFactory()) as gw:
        dispatcher, link = gw.dispatcher, gw.mqtt
        assert dispatcher is not None
        assert gw.buzzer is not None
        kinds = [type(channel) for channel in dispatcher.channels]
        # The web app's wake-up of open boards comes last (gateway/web/live.py).
        assert kinds == [MqttChannel, BuzzerChannel, StoreRecorder, ChannelRouter, LogChannel, BoardChanges]

        def state() -> tuple[bool, bool]:
            client = link._client  # noqa: SLF001
            assert client is not None
            written = not link.offline_buffer and not client._client._out_packet  # noqa: SLF001
            return written, gw.buzzer is not None and gw.buzzer.sounding

        notes: list[tuple[str, str, bool, bool]] = []
        dispatcher.channels = [Watched(channel, notes, state) for channel in dispatcher.channels]
        reading = LatchReading("s-1", LatchState.OPEN, boot=1, seq=1, sensor_ts=time.time(), source=Source.MQTT)
        assert gw.submit(reading).accepted
        # When the core's decision has been dispatched, only the socket and the buzzer have the alarm...
        assert [note[:2] for note in notes] == [("MqttChannel", "AlarmEvent"), ("BuzzerChannel", "AlarmEvent")]
        await asyncio.sleep(0.05)  # ... the rest comes a moment later, in order
        alarm_notes = [note for note in notes if note[1] == "AlarmEvent"]
        assert [note[0] for note in alarm_notes[:5]] == [
            "MqttChannel",
            "BuzzerChannel",
            "StoreRecorder",
            "ChannelRouter",
            "LogChannel",
        ]
        mqtt_note, buzzer_note = alarm_notes[0], alarm_notes[1]
        assert mqtt_note[2]  # when the MQTT channel returned, the alarm's PUBLISH had left paho for the socket
        assert buzzer_note[3]  # when the buzzer channel returned, it sounded
        states = [note[0] for note in notes if note[1] == "CribState"]
        assert states[:2] == ["MqttChannel", "BuzzerChannel"]  # the crib state too, after the alarm, in order


async def test_the_alert_policy_takes_the_alarm_after_the_socket_the_buzzer_and_the_record(
    mqtt_endpoint: BrokerEndpoint,
) -> None:
    """The policy's take (its notices, its steps on the incident's timeline) waits like the record: the submit
    returns with only the socket and the buzzer served, and the policy comes after the deferred channels, so the
    store holds the alarm before the policy's first step on it (none refused for a missing alarm)."""
    settings = make_settings(mqtt_endpoint)
    async with running(settings, MockFactory()) as gw:
        dispatcher = gw.dispatcher
        assert dispatcher is not None
        notes: list[tuple[str, str, bool, bool]] = []
        dispatcher.channels = [Watched(channel, notes, lambda: (True, True)) for channel in dispatcher.channels]
        take = gw.policy.take

        def noted_take(events: Any) -> Any:
            notes.extend(("AlertPolicy", type(ev).__name__, True, True) for ev in events)
            return take(events)

        gw.policy.take = noted_take  # type: ignore[method-assign]
        reading = LatchReading("s-1", LatchState.OPEN, boot=1, seq=1, sensor_ts=time.time(), source=Source.MQTT)
        assert gw.submit(reading).accepted
        assert [note[0] for note in notes] == ["MqttChannel", "BuzzerChannel"]
        await asyncio.sleep(0.05)
        order = [note[0] for note in notes if note[1] == "AlarmEvent"]
        assert order[:7] == ["MqttChannel", "BuzzerChannel", "StoreRecorder", "ChannelRouter", "LogChannel",
                             "BoardChanges", "AlertPolicy"]  # fmt: skip
        assert await asyncio.to_thread(gw.writer.flush, 5.0)
        health = gw.writer.health
        assert (health.pending, health.dropped, health.last_error) == (0, 0, None)
