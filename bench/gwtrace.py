"""Run the gateway with timestamps along its alarm path: where do its microseconds go? (Diagnosis only.)

``python -m bench.gwtrace --out FILE -- gateway --config SITE.toml`` runs ``gateway.cli`` unchanged, after wrapping
a few functions with ``time.perf_counter`` stamps (nothing in the gateway's code is edited). Stop it with SIGTERM
or SIGINT: it then writes FILE (JSON) and prints a summary on stderr.
``python -m bench.latency --gateway-trace FILE`` does all of that.

Two kinds of figures:

* ``calls``: how long each wrapped call takes (``MqttLink._on_message``, ``decode_inbound`` and
  ``CribMonitor.decide`` by event type, ``advance``, ``next_deadline``, ``Dispatcher.dispatch``,
  ``encode_outbound``, ``publish_now``, paho's ``publish``, ``_packet_write`` and ``loop_write``, log records
  written, garbage collections).
* ``path``: for every ``raised`` crib-open alarm, the time between consecutive stages of its latch message's
  way through the gateway (see :data:`STAGES`). On this path everything from ``link_on_message`` to
  ``dispatch_end`` is one synchronous call: ``MqttLink._on_message`` decodes, ``Gateway.submit`` runs
  ``CribMonitor.decide`` and ``Dispatcher.dispatch``, whose MQTT channel calls ``MqttLink.send`` ->
  ``publish_now``: paho's ``publish``, then paho's ``_packet_write`` writes the bytes to the socket. The only
  hand-off is between aiomqtt's queue and ``MqttLink._on_message``: the gateway's inbox, emptied as soon as paho's
  ``loop_read`` that parsed the message returns (``gateway.mqtt.connection._Inbox``; a ``call_soon`` before).

The stamps cost about a microsecond each; the wrapped calls are timed from the inside, so the figures for
``calls`` are close to the real cost, while ``path`` includes what the stamping itself adds (a few microseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

import alerts.channels.mqtt
import gateway.cli
import gateway.mqtt.connection
import gateway.mqtt.link
from alerts.dispatch import Dispatcher
from bench.stats import summarize
from gateway.domain.events import Decision, InboundEvent, LatchReading
from gateway.domain.monitor import CribMonitor
from gateway.mqtt.link import MqttLink

STAGES = (
    "paho_on_message",  # paho calls aiomqtt's on_message with the parsed latch message
    "handed",  # aiomqtt puts it on its queue: the gateway's handing queue puts it in the connection's inbox
    "link_on_message",  # MqttLink._on_message starts (paho's loop_read returned; the inbox hands it on)
    "decode_end",  # gateway.protocol.codec.decode_sensor (or decode_inbound) returned the LatchReading
    "handle_start",  # CribMonitor.decide called (by Gateway.submit)
    "handle_end",  # ... and returned the alarm event and the crib state
    "paho_publish",  # paho's publish of the alarm event called (dispatch -> MQTT channel -> send -> publish_now)
    "socket_write",  # the paho _packet_write that wrote the alarm's PUBLISH to the socket returned
    "dispatch_end",  # Dispatcher.dispatch returned (the log line, the crib state's encode and publish done)
)
LATENCY_SPAN = ("paho_on_message", "socket_write")
"""The part of the path that is in the alarm's latency: after ``socket_write`` the alarm has left."""


PACKET_WRITE_LABELS = {
    True: "paho.Client._packet_write[packets queued]",  # it sends something: a socket write
    False: "paho.Client._packet_write[nothing queued]",  # e.g. aiomqtt's writer after publish_now wrote it all
}


class Tracer:
    def __init__(self) -> None:
        self.calls: defaultdict[str, list[float]] = defaultdict(list)
        self.paho_stamp: float | None = None  # set by aiomqtt's on_message, read by the queue's put_nowait
        self.handed: dict[int, tuple[float | None, float]] = {}  # id(aiomqtt message) -> (paho stamp, handed)
        self.current: dict[str, float] | None = None  # stages of the message MqttLink._on_message is handling
        self.current_key: tuple[str, int, int] | None = None  # its latch (sensor, boot, seq), once decoded
        # (latch key, stages of that latch message, stages of one alarm publish, payload of the publish)
        self.alarm_publishes: list[tuple[tuple[str, int, int], dict[str, float], dict[str, float], bytes]] = []
        # alarm publishes whose bytes have not been written yet: (paho's MQTTMessageInfo, stages to stamp)
        self.unwritten: list[tuple[paho.MQTTMessageInfo, dict[str, float]]] = []
        self._gc_started: float | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self.timed(f"gc.collect[generation {info['generation']}]", time.perf_counter() - self._gc_started)
            self._gc_started = None

    def timed(self, name: str, took: float) -> None:
        self.calls[name].append(took * 1e6)

    # -- wrappers ---------------------------------------------------------------------------------

    def install(self) -> None:
        tracer = self
        perf = time.perf_counter
        gc.callbacks.append(self._on_gc)

        # paho -> aiomqtt: paho calls aiomqtt's on_message (bound when aiomqtt.Client is built, so the class
        # attribute is wrapped before the gateway builds its client).
        aiomqtt_on_message = aiomqtt.Client._on_message  # noqa: SLF001

        def traced_aiomqtt_on_message(
            self: aiomqtt.Client, client: Any, userdata: Any, message: paho.MQTTMessage
        ) -> None:
            tracer.paho_stamp = perf()
            try:
                aiomqtt_on_message(self, client, userdata, message)
            finally:
                tracer.paho_stamp = None

        aiomqtt.Client._on_message = traced_aiomqtt_on_message  # type: ignore[method-assign]  # noqa: SLF001

        # aiomqtt -> the gateway: new_client builds its queue class with _handing_queue(inbox); its put_nowait
        # puts the message in the inbox. A subclass stamps the hand-over of each message.
        handing_queue: Callable[..., type[asyncio.Queue[aiomqtt.Message]]] = gateway.mqtt.connection._handing_queue  # noqa: SLF001

        def traced_handing_queue(inbox: Any) -> type[asyncio.Queue[aiomqtt.Message]]:
            base = handing_queue(inbox)

            class TracedHandingQueue(base):  # type: ignore[valid-type,misc]
                def put_nowait(self, item: aiomqtt.Message) -> None:
                    tracer.handed[id(item)] = (tracer.paho_stamp, perf())
                    super().put_nowait(item)

            return TracedHandingQueue

        setattr(gateway.mqtt.connection, "_handing_queue", traced_handing_queue)  # noqa: B010

        # The gateway's own path: MqttLink._on_message (bound when MqttLink.run builds the client).
        link_on_message = MqttLink._on_message  # noqa: SLF001

        def traced_link_on_message(self: MqttLink, message: aiomqtt.Message) -> None:
            start = perf()
            paho_stamp, handed = tracer.handed.pop(id(message), (None, None))
            stages = {"link_on_message": start}
            if paho_stamp is not None:
                stages["paho_on_message"] = paho_stamp
            if handed is not None:
                stages["handed"] = handed
            tracer.current, tracer.current_key = stages, None
            try:
                link_on_message(self, message)
            finally:
                tracer.timed("MqttLink._on_message", perf() - start)
                tracer.current = tracer.current_key = None

        MqttLink._on_message = traced_link_on_message  # type: ignore[method-assign]  # noqa: SLF001

        # The link decodes its own sensors' messages with decode_sensor (topic parsed once), the rest with
        # decode_inbound: both module globals of gateway.mqtt.link.
        for decoder_name in ("decode_inbound", "decode_sensor"):
            decoder: Callable[..., InboundEvent] | None = getattr(gateway.mqtt.link, decoder_name, None)
            if decoder is None:  # an earlier gateway (only decode_inbound)
                continue

            def traced_decode(
                *args: Any, _decoder: Callable[..., InboundEvent] = decoder, _name: str = decoder_name, **kw: Any
            ) -> InboundEvent:
                start = perf()
                event = _decoder(*args, **kw)
                end = perf()
                tracer.timed(f"{_name}[{type(event).__name__}]", end - start)
                stages = tracer.current
                if stages is not None and isinstance(event, LatchReading):
                    stages["decode_end"] = end
                    tracer.current_key = (event.sensor_id, event.boot, event.seq)
                return event

            setattr(gateway.mqtt.link, decoder_name, traced_decode)

        decide = CribMonitor.decide

        def traced_decide(self: CribMonitor, event: InboundEvent, *args: Any, **kw: Any) -> Decision:
            start = perf()
            out = decide(self, event, *args, **kw)
            end = perf()
            tracer.timed(f"CribMonitor.decide[{type(event).__name__}]", end - start)
            stages = tracer.current
            if stages is not None and tracer.current_key is not None:
                stages["handle_start"] = start
                stages["handle_end"] = end
            return out

        CribMonitor.decide = traced_decide  # type: ignore[method-assign]

        for name in ("advance", "next_deadline"):
            self.wrap_method(CribMonitor, name, f"CribMonitor.{name}")

        dispatch = Dispatcher.dispatch

        def traced_dispatch(self: Dispatcher, events: Any, **kw: Any) -> None:
            events = list(events)
            start = perf()
            dispatch(self, events, **kw)
            end = perf()
            tracer.timed(f"Dispatcher.dispatch[{len(events)} events]", end - start)
            stages = tracer.current
            if stages is not None and tracer.current_key is not None:
                stages["dispatch_end"] = end

        Dispatcher.dispatch = traced_dispatch  # type: ignore[method-assign]

        encode_outbound: Callable[..., Any] = getattr(alerts.channels.mqtt, "encode_outbound")  # noqa: B009

        def traced_encode(topics: Any, event: Any, gw_run: int) -> Any:
            start = perf()
            out = encode_outbound(topics, event, gw_run)
            tracer.timed(f"encode_outbound[{type(event).__name__}]", perf() - start)
            return out

        setattr(alerts.channels.mqtt, "encode_outbound", traced_encode)  # noqa: B010

        emit = logging.StreamHandler.emit

        def traced_emit(self: logging.Handler, record: logging.LogRecord) -> None:
            start = perf()
            emit(self, record)
            tracer.timed("logging.StreamHandler.emit", perf() - start)

        logging.StreamHandler.emit = traced_emit  # type: ignore[method-assign]

        # MqttLink.send -> publish_now (a module global of gateway.mqtt.link) -> paho publish + _packet_write.
        publish_now: Callable[..., Any] = getattr(gateway.mqtt.link, "publish_now")  # noqa: B009

        def traced_publish_now(*args: Any, **kw: Any) -> Any:
            start = perf()
            info = publish_now(*args, **kw)
            tracer.timed("gateway.mqtt.connection.publish_now", perf() - start)
            return info

        setattr(gateway.mqtt.link, "publish_now", traced_publish_now)  # noqa: B010

        publish = paho.Client.publish

        def traced_publish(self: paho.Client, topic: str, payload: Any = None, *args: Any, **kw: Any) -> Any:
            start = perf()
            info = publish(self, topic, payload, *args, **kw)
            tracer.timed("paho.Client.publish", perf() - start)
            stages, key = tracer.current, tracer.current_key
            if stages is not None and key is not None and "/alarm/" in topic and isinstance(payload, bytes):
                sent: dict[str, float] = {"paho_publish": start}
                tracer.alarm_publishes.append((key, stages, sent, payload))
                tracer.unwritten.append((info, sent))
            return info

        paho.Client.publish = traced_publish  # type: ignore[method-assign]

        packet_write = paho.Client._packet_write  # noqa: SLF001

        def traced_packet_write(self: paho.Client) -> Any:
            # The alarm publishes waiting for their bytes to leave: their packets in paho's out queue now.
            label = PACKET_WRITE_LABELS[bool(self._out_packet)]
            watched = []
            if tracer.unwritten:
                infos = {id(info): sent for info, sent in tracer.unwritten}
                watched = [(p, infos[id(p["info"])]) for p in self._out_packet if id(p["info"]) in infos]
            start = perf()
            rc = packet_write(self)
            end = perf()
            tracer.timed(label, end - start)
            if watched:
                done = set()
                for packet, sent in watched:
                    if packet["to_process"] == 0:
                        sent["socket_write"] = end
                        done.add(id(sent))
                tracer.unwritten = [(i, s) for i, s in tracer.unwritten if id(s) not in done]
            return rc

        paho.Client._packet_write = traced_packet_write  # type: ignore[method-assign]  # noqa: SLF001

        self.wrap_method(paho.Client, "loop_write", "paho.Client.loop_write")
        # Reading: every _packet_read call (a whole packet, or the part of one the buffer had), and the handling of
        # every whole packet (paho's parse, aiomqtt's Message, the PUBACK queued for QoS 1), per packet.
        self.wrap_method(paho.Client, "_packet_read", "paho.Client._packet_read")
        self.wrap_method(paho.Client, "_packet_handle", "paho.Client._packet_handle")

    def wrap_method(self, cls: type, name: str, label: str) -> None:
        original: Callable[..., Any] = getattr(cls, name)
        perf = time.perf_counter
        timed = self.timed

        def wrapper(*args: Any, **kw: Any) -> Any:
            start = perf()
            result = original(*args, **kw)
            timed(label, perf() - start)
            return result

        setattr(cls, name, wrapper)

    # -- report -----------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        calls = {}
        for name, values in sorted(self.calls.items()):
            s = summarize(values)
            calls[name] = {"n": s.n, "mean_us": s.mean, "p50_us": s.p50, "p99_us": s.p99, "max_us": s.max}
        deltas: defaultdict[str, list[float]] = defaultdict(list)
        traced: list[dict[str, float]] = []
        raised = 0
        first, last = LATENCY_SPAN
        total_name = f"TOTAL {first} -> {last}"
        for key, latch_stages, sent, payload in self.alarm_publishes:
            event = json.loads(payload)
            trigger = event.get("trigger")
            if event.get("event") != "raised" or event.get("kind") != "crib_open" or not trigger:
                continue
            if (trigger.get("sensor"), trigger.get("boot"), trigger.get("seq")) != key:
                continue  # raised by another message than the one being handled (cannot happen with grace 0)
            raised += 1
            stages = latch_stages | sent
            if not all(stage in stages for stage in STAGES):
                continue
            traced.append(stages)
            for before, after in itertools.pairwise(STAGES):
                deltas[f"{before} -> {after}"].append((stages[after] - stages[before]) * 1e6)
            deltas[total_name].append((stages[last] - stages[first]) * 1e6)
        path = {}
        for name, values in deltas.items():
            s = summarize(values)
            path[name] = {"n": s.n, "mean_us": s.mean, "p50_us": s.p50, "p90_us": s.p90, "p99_us": s.p99}
        # The slowest 1% of alarms (by their way through the gateway until written): which stage took the time?
        traced.sort(key=lambda st: st[last] - st[first])
        slowest = traced[-max(1, len(traced) // 100) :] if traced else []
        tail = (
            {
                f"{before} -> {after}": sum((st[after] - st[before]) * 1e6 for st in slowest) / len(slowest)
                for before, after in itertools.pairwise(STAGES)
            }
            if slowest
            else {}
        )
        if slowest:
            tail[total_name] = sum((st[last] - st[first]) * 1e6 for st in slowest) / len(slowest)
        return {
            "alarms_raised": raised,
            "alarms_traced": len(traced),
            "stages": list(STAGES),
            "path": path,
            "slowest_1pct_mean_us": tail,
            "calls": calls,
        }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"alarm path inside the gateway, {report['alarms_traced']} of {report.get('alarms_raised', '?')} raised "
        "alarms traced (microseconds):"
    ]
    lines.append(f"  {'stage':48} {'p50':>8} {'p90':>8} {'p99':>8} {'mean':>8}")
    for name, s in report["path"].items():
        lines.append(f"  {name:48} {s['p50_us']:8.1f} {s['p90_us']:8.1f} {s['p99_us']:8.1f} {s['mean_us']:8.1f}")
    tail = report.get("slowest_1pct_mean_us") or {}
    if tail:
        lines.append("the slowest 1% of those alarms, mean per stage (microseconds):")
        lines.extend(f"  {name:48} {value:8.1f}" for name, value in tail.items())
    lines.append("calls (microseconds):")
    lines.append(f"  {'call':48} {'n':>7} {'p50':>8} {'p99':>8} {'mean':>8} {'max':>8}")
    for name, s in report["calls"].items():
        lines.append(
            f"  {name:48} {s['n']:7d} {s['p50_us']:8.1f} {s['p99_us']:8.1f} {s['mean_us']:8.1f} {s['max_us']:8.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gwtrace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="write the figures here (JSON) on exit")
    parser.add_argument("cli_args", nargs=argparse.REMAINDER, help="-- then the arguments of gateway.cli")
    args = parser.parse_args(argv)
    cli_args = [a for a in args.cli_args if a != "--"] if args.cli_args[:1] == ["--"] else args.cli_args
    tracer = Tracer()
    tracer.install()
    try:
        code = gateway.cli.main(cli_args)
    finally:
        report = tracer.report()
        args.out.write_text(json.dumps(report, indent=2))
        print(format_report(report), file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
