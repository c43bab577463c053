"""The simulator's live view (``cribwatch sim --live``): every sensor's state and the site's alarms, as they change.

Built on rich (:class:`rich.live.Live` around :class:`rich.table.Table` s). On a terminal the tables are redrawn
in place a few times a second and the console's lines scroll above them; when stdout is not a terminal (a pipe,
a log file, CI) nothing is redrawn: each alarm event is one plain line as it arrives, and the tables are
printed once at the end.

What it shows comes from two places: the simulated sensors themselves (connection, latch, battery) and the
broker, on a connection of its own (:func:`gateway.mqtt.connection.new_client`): the site's ``alarm/+`` topic,
decoded as :class:`~gateway.protocol.AlarmEventPayload`, and the sensors' heartbeats (``telemetry``), whose
arrival is "last heartbeat". With an account that may not read those topics (the shipped ACL's ``staff`` cannot
read sensor topics), the heartbeat column stays empty and nothing else breaks. Cribs and rooms are shown by
their ids: nothing here identifies a child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiomqtt
from rich.console import Console as RichConsole
from rich.console import Group
from rich.live import Live
from rich.table import Table

from firmware_sim.console import CribRef
from firmware_sim.fleet import Fleet
from firmware_sim.scenario import Progress
from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.protocol import AlarmEventPayload, ProtocolError, SensorChannel, Topics, decode

__all__ = ["LiveView", "alarm_line"]

log = logging.getLogger(__name__)

REFRESH_PER_SECOND = 2
ALARMS_SHOWN = 10
"""The alarm table shows this many alarms, the most recently changed first."""
RETRY_S = 2.0
"""How long the view waits before connecting again after losing the broker."""


def alarm_line(event: AlarmEventPayload) -> str:
    """One alarm event as a plain line (when stdout is not a terminal)."""
    line = f"alarm {event.event.value}: {event.kind.value} room {event.room} crib {event.crib}"
    line += f" priority {event.priority}"
    if event.resolution is not None:
        line += f" ({event.resolution.value})"
    if event.test:
        line += " [test]"
    return line + f" (alarm {event.alarm_id})"


@dataclass(slots=True)
class _Seen:
    event: AlarmEventPayload
    at: float  # wall clock when the view received it


class LiveView:
    """The live view's state and its tables; :meth:`run` shows it until cancelled.

    ``say`` prints one plain line (the console's, with its timestamp); it is used when the output is not a
    terminal. ``wall_clock`` is injectable for tests.
    """

    def __init__(
        self,
        fleet: Fleet,
        cribs: Sequence[CribRef] = (),
        *,
        say: Callable[[str], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        progress: Progress | None = None,
        scenario: str | None = None,
    ) -> None:
        self._fleet = fleet
        self._progress = progress
        self._scenario = scenario
        self._crib_of = {crib.sensor_id: crib.crib_id for crib in cribs if crib.sensor_id is not None}
        self._say = say
        self._wall_clock = wall_clock
        self._alarms: dict[str, _Seen] = {}
        self._heartbeats: dict[str, float] = {}
        self.broker_state = "connecting"
        """The view's own connection to the broker: connecting, subscribed, or lost (retrying)."""

    @property
    def topics(self) -> Topics:
        return self._fleet.topics

    # -- what arrives ------------------------------------------------------------------------------

    def take_alarm(self, event: AlarmEventPayload) -> None:
        """An alarm event seen on the site's alarm topic."""
        self._alarms[event.alarm_id] = _Seen(event, self._wall_clock())
        if self._say is not None:
            self._say(alarm_line(event))

    def last_heartbeat(self, sensor_id: str) -> float | None:
        """When the view last saw a heartbeat of ``sensor_id`` on the broker (wall clock), if ever."""
        return self._heartbeats.get(sensor_id)

    def take_heartbeat(self, sensor_id: str) -> None:
        self._heartbeats[sensor_id] = self._wall_clock()

    def take_message(self, topic: str, payload: bytes) -> None:
        """One message of the view's subscriptions: an alarm event or a sensor's heartbeat."""
        if topic.startswith(f"{self.topics.prefix}/alarm/"):
            try:
                event = decode(AlarmEventPayload, payload)
            except ProtocolError as exc:
                log.warning("live view: an alarm message on %s that does not decode: %s", topic, exc)
                return
            self.take_alarm(event)
            return
        with contextlib.suppress(ProtocolError):
            sensor_id, channel = self.topics.parse_sensor_topic(topic)
            if channel is SensorChannel.TELEMETRY:
                self.take_heartbeat(sensor_id)

    # -- what is shown -----------------------------------------------------------------------------

    def sensor_table(self) -> Table:
        now = self._wall_clock()
        table = Table(title=f"site {self.topics.site}: {len(self._fleet)} sensors", title_justify="left")
        for column in ("sensor", "crib", "connection", "latch", "battery", "last heartbeat"):
            table.add_column(column)
        for sensor in self._fleet:
            # Powered but not connected: connecting (retrying with backoff) or refused (bad credentials).
            connection = "connected" if sensor.connected else (sensor.state if sensor.powered else "powered off")
            style = {"connected": "green", "connecting": "yellow"}.get(connection, "red")
            heard = self._heartbeats.get(sensor.sensor_id)
            table.add_row(
                sensor.sensor_id,
                self._crib_of.get(sensor.sensor_id, "-"),
                f"[{style}]{connection}[/]",
                f"[red]{sensor.latch.value}[/]" if sensor.latch.value == "open" else sensor.latch.value,
                f"{sensor.battery_pct} %",
                "-" if heard is None else f"{max(0.0, now - heard):.0f} s ago",
            )
        return table

    def alarm_table(self) -> Table:
        table = Table(
            title=f"alarms seen on {self.topics.alarm_filter} (view: {self.broker_state})", title_justify="left"
        )
        for column in ("time", "event", "kind", "priority", "room", "crib", "alarm"):
            table.add_column(column)
        latest = sorted(self._alarms.values(), key=lambda seen: seen.at, reverse=True)[:ALARMS_SHOWN]
        for seen in latest:
            event = seen.event
            stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
            what = event.event.value + (f" ({event.resolution.value})" if event.resolution is not None else "")
            table.add_row(stamp, what, event.kind.value, event.priority, event.room, event.crib, event.alarm_id)
        if not latest:
            table.add_row("-", "none yet", "", "", "", "", "")
        return table

    def progress_table(self) -> Table | None:
        """With ``sim run``: the step being played and the expectations passed and failed so far."""
        progress = self._progress
        if progress is None:
            return None
        verdict = "finished" if progress.finished else "running"
        title = f"scenario {self._scenario or ''}: {verdict}".replace("  ", " ")
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column("what")
        table.add_column("")
        table.add_row("step", f"{progress.steps_done} of {progress.steps_total}: {progress.step}")
        table.add_row(
            "expectations",
            f"[green]{len(progress.passed)} passed[/], [red]{len(progress.failed)} failed[/], "
            f"{progress.pending} pending",
        )
        for name in progress.failed:
            table.add_row("[red]FAIL[/]", name)
        return table

    def render(self) -> Group:
        tables = [self.sensor_table(), self.alarm_table()]
        progress = self.progress_table()
        return Group(*tables, *([progress] if progress is not None else []))

    # -- running -----------------------------------------------------------------------------------

    async def follow(self, broker: BrokerAddress) -> None:
        """Subscribe to the site's alarms and the sensors' heartbeats and take what arrives, until cancelled;
        after a lost connection, connect again every :data:`RETRY_S`."""
        telemetry = f"{self.topics.prefix}/sensor/+/{SensorChannel.TELEMETRY.value}"
        identifier = f"cribwatch-sim-live-{uuid.uuid4().hex[:12]}"
        while True:
            self.broker_state = "connecting"
            try:
                async with new_client(broker, identifier=identifier) as client:
                    await client.subscribe([(self.topics.alarm_filter, 1), (telemetry, 0)])
                    self.broker_state = "subscribed"
                    async for message in client.messages:
                        if isinstance(message.payload, bytes):
                            self.take_message(message.topic.value, message.payload)
            except aiomqtt.MqttError as exc:
                self.broker_state = "lost, retrying"
                log.debug("live view: broker connection: %s", exc)
            await asyncio.sleep(RETRY_S)

    async def run(self, broker: BrokerAddress, console: RichConsole) -> None:
        """Show the view on ``console`` until cancelled: redrawn in place on a terminal, plain lines otherwise
        (and the tables once, when it ends)."""
        if not console.is_terminal:
            try:
                await self.follow(broker)
            finally:
                console.print(self.render())
            return
        self._say = None  # the table shows the alarms; the console's lines scroll above it
        with Live(get_renderable=self.render, console=console, refresh_per_second=REFRESH_PER_SECOND):
            await self.follow(broker)
