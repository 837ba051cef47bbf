"""Hash banks on SQLite and PostgreSQL: every import format, list/delete, and matching by the
reference's rule with real vPDQ of real clips (the reference computes the bank side)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
import vpdq
from sqlalchemy import select

from tests.conftest import RunningServer, database_url_for
from tests.helpers import post_chunk, wait_for_video
from tests.processing.analyzers.test_moderation import reencode
from tests.sample_clips import clips  # noqa: F401  (fixture)
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import WebhookDelivery
from vidgate.events.webhooks import set_webhook
from vidgate.moderation.banks import (
    BankError,
    delete_bank,
    import_bank,
    list_banks,
    match_video,
    parse_bank_file,
)
from vidgate.moderation.models import VpdqFeature
from vidgate.processing.pipeline import PipelineConfig, analyze

HEX_A = "f" * 16 + "0" * 48
HEX_B = "0123456789abcdef" * 4


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database_url_for(request.param, tmp_path) as url:
        database = Database(url)
        migrate.upgrade(database)
        try:
            yield database
        finally:
            database.dispose()


def reference_features(path: Path) -> list[vpdq.VpdqFeature]:
    return sorted(vpdq.computeHash(str(path)), key=lambda f: f.frame_number)


def pipeline_features(path: Path, model_dir: Path) -> list[VpdqFeature]:
    config = PipelineConfig(model_dir=model_dir, moderation=False)
    result = analyze(path, video_id="v", content_hash="h", model_type="x", config=config)
    assert result.hashes is not None
    return result.hashes.vpdq


def remux(source: Path, target: Path) -> Path:
    with av.open(str(source)) as src, av.open(str(target), "w", format="matroska") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_every_import_format(tmp_path: Path) -> None:
    text = write(tmp_path / "clip.txt", f"0,100,{HEX_A},0.000\n25,40,{HEX_B},1.000\n")
    assert [(e.name, e.kind, e.frames) for e in parse_bank_file(text)] == [
        ("clip", "vpdq", [(HEX_A, 100), (HEX_B, 40)])
    ]
    compact = write(tmp_path / "te.json", json.dumps([f"{HEX_A},100,0.000", f"{HEX_B},90,1.000"]))
    assert [e.frames for e in parse_bank_file(compact)] == [[(HEX_A, 100), (HEX_B, 90)]]
    named = write(tmp_path / "hma.json", json.dumps({"case-1": [f"{HEX_A},100,0.000"], "case-2": [f"{HEX_B},80,0.0"]}))
    assert [(e.name, e.frames) for e in parse_bank_file(named)] == [
        ("case-1", [(HEX_A, 100)]),
        ("case-2", [(HEX_B, 80)]),
    ]
    old = write(tmp_path / "old.json", json.dumps({"1": {"hash": HEX_B, "quality": 70}, "0": {"hash": HEX_A}}))
    assert [e.frames for e in parse_bank_file(old)] == [[(HEX_A, 100), (HEX_B, 70)]]
    signals = write(
        tmp_path / "signals.txt",
        f'# exported\nvpdq ["{HEX_A},100,0.000"] clip-7\npdq {HEX_B} photo-3\n{HEX_A.upper()},plain\n{HEX_B}\n',
    )
    assert [(e.name, e.kind, e.frames) for e in parse_bank_file(signals)] == [
        ("clip-7", "vpdq", [(HEX_A, 100)]),
        ("photo-3", "pdq", [(HEX_B, 100)]),
        ("plain", "pdq", [(HEX_A, 100)]),
        (None, "pdq", [(HEX_B, 100)]),
    ]


def test_bad_files_name_the_problem(tmp_path: Path) -> None:
    cases = {
        "empty.txt": ("\n\n", "is empty"),
        "short.txt": (f"{HEX_A}\n{HEX_A[:-1]}\n", "line 2"),
        "broken.json": ("[1,", "not valid JSON"),
        "frames.json": (json.dumps(["nothex,1,0"]), "hash,quality,timestamp"),
        "vpdq.txt": (f"0,100,{HEX_A},0.0\n1,100,zz,0.0\n", "line 2"),
    }
    for name, (text, message) in cases.items():
        with pytest.raises(BankError, match=message):
            list(parse_bank_file(write(tmp_path / name, text)))


def test_import_list_delete(db: Database, tmp_path: Path) -> None:
    import_bank(db, "known", parse_bank_file(write(tmp_path / "a.txt", f"{HEX_A}\n{HEX_B}\n")))
    summary = import_bank(db, "known", parse_bank_file(write(tmp_path / "b.json", json.dumps([f"{HEX_A},100,0"]))))
    assert (summary.entries, summary.frames) == (3, 3)
    import_bank(db, "other", parse_bank_file(write(tmp_path / "c.txt", f"{HEX_B}\n")))
    assert [(b.name, b.entries) for b in list_banks(db)] == [("known", 3), ("other", 1)]
    with pytest.raises(BankError, match="bank name"):
        import_bank(db, "../x", [])
    with pytest.raises(BankError, match="line 2"):  # nothing of a bad file is imported
        import_bank(db, "third", parse_bank_file(write(tmp_path / "d.txt", f"{HEX_A}\nnope\n")))
    assert [b.name for b in list_banks(db)] == ["known", "other"]
    assert delete_bank(db, "known") and not delete_bank(db, "known")
    assert [b.name for b in list_banks(db)] == ["other"]
    features = [VpdqFeature(frame_number=0, quality=100, hash=HEX_A, timestamp=0.0)]
    assert match_video(db, features) == []  # the deleted bank's hashes are gone


def test_real_clips_match_their_bank_and_nothing_else(
    db: Database,
    clips: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    bank_file = tmp_path / "bikes.txt"
    bank_file.write_text(
        "".join(f"{f.frame_number},{f.quality},{f.hex},{f.timestamp:.3f}\n" for f in reference_features(clips["bikes"]))
    )
    import_bank(db, "known-videos", parse_bank_file(bank_file))
    poster = reference_features(clips["carphone_pristine"])[0].hex
    import_bank(db, "known-images", parse_bank_file(write(tmp_path / "images.txt", f"{poster} carphone-still\n")))

    copy = reencode(clips["bikes"], tmp_path / "copy.mp4", 320, 136)
    (match,) = match_video(db, pipeline_features(copy, tmp_path))
    assert (match.bank, match.entry_name) == ("known-videos", "bikes")
    assert match.query_match_percent >= 80 and match.entry_match_percent >= 80
    (image,) = match_video(db, pipeline_features(clips["carphone_pristine"], tmp_path))
    assert (image.bank, image.entry_name, image.entry_match_percent) == ("known-images", "carphone-still", 100.0)
    assert match_video(db, pipeline_features(clips["bigbuckbunny"], tmp_path)) == []


def test_the_reference_rule_quality_and_probe_radius(db: Database, tmp_path: Path) -> None:
    base = int(HEX_B, 16)
    # Two bits flipped in ten 16-bit bands and one in the other six: distance 26, no band equal.
    far = base ^ sum((0b11 if band < 10 else 0b1) << (16 * band) for band in range(16))
    import_bank(db, "b", parse_bank_file(write(tmp_path / "far.txt", f"{far:064x} far\n")))
    query = [VpdqFeature(frame_number=0, quality=100, hash=HEX_B, timestamp=0.0)]
    assert match_video(db, query) == []  # exact bands only: this pair is out of reach
    (found,) = match_video(db, query, probe_radius=1)  # one-bit neighbours: within 31 bits, found
    assert found.entry_name == "far"
    assert match_video(db, query, probe_radius=1, distance=25) == []
    low = [VpdqFeature(frame_number=0, quality=49, hash=HEX_B, timestamp=0.0)]
    assert match_video(db, low, probe_radius=1) == []  # frames under quality 50 do not count


def test_a_match_flags_the_video_and_notifies(server: RunningServer, clips: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    # The clip remuxed into Matroska (same frames, its own content hash: no earlier result to
    # reuse) is matched against the bank holding the reference's vPDQ of the MP4.
    upload = remux(clips["carphone_distorted"], tmp_path / "upload.mkv")
    features = reference_features(clips["carphone_distorted"])
    bank_file = write(
        tmp_path / "te.json", json.dumps({"case-42": [f"{f.hex},{f.quality},{f.timestamp:.3f}" for f in features]})
    )
    import_bank(server.db, "ncmec-test", parse_bank_file(bank_file))
    set_webhook(server.db, "alice", "http://127.0.0.1:9/hook")
    with server.client("alice") as alice:
        response = post_chunk(alice, upload.read_bytes(), filename="c.mkv", content_type="")
        video_id = response.json()["data"]["video_id"]
        wait_for_video(alice, video_id)
        result = alice.get(f"/v1/videos/{video_id}/result").json()["data"]
    moderation = result["moderation"]
    assert moderation["flagged"] is True
    assert [m["bank"] for m in moderation["hash_matches"]] == ["ncmec-test"]
    assert moderation["hash_matches"][0]["entry_name"] == "case-42"
    assert any(r["code"] == "hash_match" and "ncmec-test" in r["message"] for r in moderation["reasons"])
    with server.db.session() as session:
        kinds = session.scalars(select(WebhookDelivery.event_type)).all()
        payload = session.scalar(select(WebhookDelivery.payload).where(WebhookDelivery.event_type == "hash_match"))
    assert "hash_match" in kinds and payload is not None
    event = json.loads(payload)
    assert event["video_id"] == video_id and event["data"]["matches"][0]["bank"] == "ncmec-test"

    # The flag is the content's (derived from the bytes): bob, sending the same file, has his
    # own video flagged and is told of it under his own video's id, never alice's.
    set_webhook(server.db, "bob", "http://127.0.0.1:9/bob-hook")
    with server.client("bob") as bob:
        response = post_chunk(bob, upload.read_bytes(), filename="b.mkv", content_type="")
        bobs = response.json()["data"]["video_id"]
        wait_for_video(bob, bobs)
        bobs_result = bob.get(f"/v1/videos/{bobs}/result").json()["data"]
    assert bobs != video_id and bobs_result["moderation"]["flagged"] is True
    with server.db.session() as session:
        told = session.execute(
            select(WebhookDelivery.url, WebhookDelivery.payload).where(WebhookDelivery.event_type == "hash_match")
        ).all()
    by_hook = {url: json.loads(body)["video_id"] for url, body in told}
    assert by_hook == {"http://127.0.0.1:9/hook": video_id, "http://127.0.0.1:9/bob-hook": bobs}
