"""A technician's command to the running gateway over MQTT (``cribwatch test-alarm``, ``cribwatch maintenance``):
publish on ``<prefix>/cmd/<device>``, wait for the answer on ``<prefix>/cmd/<device>/answer``."""

from __future__ import annotations

import asyncio
import secrets

from gateway.mqtt.connection import BrokerAddress, new_client
from gateway.protocol import COMMAND, ProtocolError, Topics, decode, encode
from gateway.protocol.payloads import CommandAnswerPayload, CommandPayload


async def send_command(
    broker: BrokerAddress,
    topics: Topics,
    device: str,
    command: CommandPayload,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - the wait for the answer, not for the whole call
) -> CommandAnswerPayload | None:
    """Send ``command`` as ``device`` and return the gateway's answer (None: no answer within ``timeout``).

    The command carries a random ``request`` (unless it has one) so that only its own answer is taken."""
    if command.request is None:
        command = command.model_copy(update={"request": secrets.token_hex(4)})
    answers: asyncio.Queue[CommandAnswerPayload] = asyncio.Queue()
    client = new_client(broker, identifier=f"{device}-{secrets.token_hex(3)}", timeout=timeout)
    async with client:
        await client.subscribe(topics.command_answer(device), qos=int(COMMAND.qos))

        async def listen() -> None:
            async for message in client.messages:
                if isinstance(message.payload, bytes):
                    try:
                        answer = decode(CommandAnswerPayload, message.payload)
                    except ProtocolError:
                        continue
                    if answer.request == command.request:
                        answers.put_nowait(answer)

        listener = asyncio.create_task(listen())
        try:
            await client.publish(topics.command(device), encode(command), qos=int(COMMAND.qos), retain=False)
            async with asyncio.timeout(timeout):
                return await answers.get()
        except TimeoutError:
            return None
        finally:
            listener.cancel()
