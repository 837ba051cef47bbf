"""The prebuilt-frame path of /ws (vidgate.api.ws_protocol, Hub's ``text_frame``): the real
server takes it, and a burst of events (several per write, one large, one not ASCII) reaches a
client as one intact message per event, in order."""

from __future__ import annotations

import json
import uuid

from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from websockets.sync.client import connect

from tests.conftest import RunningServer
from tests.helpers import wait_until
from vidgate.db.models import UserAccount
from vidgate.events.hub import sends_frames, text_frame
from vidgate.events.schema import FailureData, UploadFailed


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("an incomplete frame")


def test_text_frame_is_one_unmasked_final_text_frame_of_the_utf8_bytes() -> None:
    for text in ("{}", "é" * 70_000, "日本" * 40):  # 7-bit, 64-bit and 16-bit length headers
        frame = parse(text_frame(text))
        assert (frame.opcode, frame.fin, frame.rsv1) == (Opcode.TEXT, True, False)
        assert bytes(frame.data).decode() == text


def test_a_burst_reaches_the_client_one_message_per_event_in_order(server: RunningServer) -> None:
    with server.db.session() as session:
        alice = session.query(UserAccount).filter_by(username="alice").one().id
    url = f"{server.ws_url}?subscribe=all"
    with connect(url, additional_headers={"X-API-Key": server.key_for("alice")}, max_size=None) as socket:
        hub = server.services.hub
        wait_until(lambda: any(c.user_id == alice and c.position is not None for c in hub.connections))
        connection = next(c for c in hub.connections if c.user_id == alice)
        assert sends_frames(connection.websocket.scope)  # the real server takes prebuilt frames
        session_id = f"burst-{uuid.uuid4().hex}"
        messages = [f"event {n} é" + ("x" * 100_000 if n == 7 else "") for n in range(200)]
        with server.db.session() as session:  # published together after one commit: batched sends
            for message in messages:
                event = UploadFailed(session_id=session_id, data=FailureData(error_code="burst", message=message))
                server.services.events.to_user(event, alice, session)
        received = []
        while len(received) < len(messages):
            event = json.loads(socket.recv(timeout=30))
            if event["event_type"] != "heartbeat":
                received.append(event)
    assert [e["data"]["message"] for e in received] == messages
    numbers = [e["sequence"] for e in received]
    assert numbers == list(range(numbers[0], numbers[0] + len(messages)))
