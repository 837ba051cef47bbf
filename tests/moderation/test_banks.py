"""Hash banks on SQLite and PostgreSQL: every import format, list/delete, and matching by the
reference's rule with real vPDQ of real clips (the reference computes the bank side)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
import vpdq
from sqlalchemy import select

from tests.conftest import RunningServer, database_url_for
from tests.helpers import finishes_at_once, post_chunk, sqlite_write_lock_held, wait_for_video
from tests.processing.analyzers.test_moderation import reencode
from tests.sample_clips import clips  # noqa: F401  (fixture)
from vidgate.db import migrate
from vidgate.db.engine import Database
from vidgate.db.models import WebhookDelivery
from vidgate.events.webhooks import set_webhook
from vidgate.moderation.banks import (
    MAX_INDEX_HASHES,
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


def test_the_reference_rule_and_quality(db: Database, tmp_path: Path) -> None:
    base = int(HEX_B, 16)
    # Two bits flipped in fifteen 16-bit bands and one in the last: distance 31, no band equal
    # (exact bands alone could not see it; the one-bit probes of the pigeonhole radius do).
    far = base ^ sum((0b11 if band < 15 else 0b1) << (16 * band) for band in range(16))
    import_bank(db, "b", parse_bank_file(write(tmp_path / "far.txt", f"{far:064x} far\n")))
    query = [VpdqFeature(frame_number=0, quality=100, hash=HEX_B, timestamp=0.0)]
    (found,) = match_video(db, query)
    assert found.entry_name == "far"
    assert match_video(db, query, distance=30) == []
    assert [m.entry_name for m in match_video(db, query, max_index_hashes=0)] == ["far"]  # through SQL too
    low = [VpdqFeature(frame_number=0, quality=49, hash=HEX_B, timestamp=0.0)]
    assert match_video(db, low) == []  # frames under quality 50 do not count


def test_matching_takes_no_write_lock(db: Database, tmp_path: Path) -> None:
    """Every analysis matches its vPDQ against the banks: on SQLite those reads take no write
    lock, so a job does not queue behind the uploads' write transactions (they used to, up to
    the busy timeout), through the in-memory index and through SQL alike."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's single writer")
    import_bank(db, "b", parse_bank_file(write(tmp_path / "a.txt", f"{HEX_A} entry-a\n")))
    query = [VpdqFeature(frame_number=0, quality=100, hash=HEX_A, timestamp=0.0)]
    with sqlite_write_lock_held(db):
        for most in (MAX_INDEX_HASHES, 0):  # the index (built now, under the lock), then SQL alone
            found = finishes_at_once(lambda most=most: match_video(db, query, max_index_hashes=most))
            assert [m.entry_name for m in found] == ["entry-a"]


def brute_force(
    bank: dict[str, list[tuple[str, int]]], query: list[VpdqFeature], distance: int, percent: float
) -> dict[str, tuple[float, float]]:
    """The reference's rule, pair by pair, in plain Python."""
    found = {}
    mine = [int(f.hash, 16) for f in query if f.quality >= 50]
    for name, frames in bank.items():
        theirs = [int(h, 16) for h, q in frames if q >= 50]
        if not mine or not theirs:
            continue
        close = [[(a ^ b).bit_count() <= distance for b in theirs] for a in mine]
        query_percent = round(100.0 * sum(any(row) for row in close) / len(mine), 2)
        entry_percent = round(100.0 * sum(any(col) for col in zip(*close, strict=True)) / len(theirs), 2)
        if query_percent >= percent or entry_percent >= percent:
            found[name] = (query_percent, entry_percent)
    return found


def test_matching_is_exact_against_brute_force(db: Database, tmp_path: Path) -> None:
    """Random entries and queries made of their frames flipped by 0-40 bits (many right at the
    threshold), mixed with random frames and low-quality ones: the index (and the SQL path)
    find exactly what comparing every pair finds, percents included."""
    rng = random.Random(18)

    def flip(value: str, bits: int) -> str:
        number = int(value, 16)
        for bit in rng.sample(range(256), bits):
            number ^= 1 << bit
        return f"{number:064x}"

    bank = {
        f"e{i}": [(f"{rng.getrandbits(256):064x}", rng.choice([100, 100, 100, 40])) for _ in range(rng.randint(1, 12))]
        for i in range(300)
    }
    lines = "".join(
        f"vpdq {json.dumps([f'{h},{q},{t}.0' for t, (h, q) in enumerate(frames)])} {name}\n"
        for name, frames in bank.items()
    )
    import_bank(db, "random", parse_bank_file(write(tmp_path / "bank.txt", lines)))
    checked = matched = 0
    for trial in range(60):
        source = bank[f"e{rng.randrange(300)}"]
        near = [flip(h, rng.choice([0, 8, 20, 29, 30, 31, 31, 32, 33, 40])) for h, _ in source]
        noise = [f"{rng.getrandbits(256):064x}" for _ in range(rng.randint(0, 3))]
        query = [
            VpdqFeature(frame_number=i, quality=rng.choice([100, 100, 100, 30]), hash=h, timestamp=float(i))
            for i, h in enumerate(near + noise)
        ]
        percent = rng.choice([80.0, 50.0, 1.0])
        expected = brute_force(bank, query, 31, percent)
        for limit in (10**9, 0) if trial % 10 == 0 else (10**9,):  # the SQL path on every tenth
            got = {
                m.entry_name: (m.query_match_percent, m.entry_match_percent)
                for m in match_video(db, query, percent=percent, max_index_hashes=limit)
            }
            assert got == expected, (trial, limit)
        checked += 1
        matched += len(expected)
    assert checked == 60 and matched >= 30  # the threshold cases were really exercised


def test_time_ranges_of_a_match(db: Database, tmp_path: Path) -> None:
    frames = [f"{random.Random(i).getrandbits(256):064x}" for i in range(10)]
    bank_file = write(tmp_path / "v.json", json.dumps({"clip": [f"{h},100,{t * 2}.0" for t, h in enumerate(frames)]}))
    import_bank(db, "videos", parse_bank_file(bank_file))
    # The query holds entry frames 3-7 (6-14 s of the entry) at 100-104 s, amid unrelated frames.
    noise = [f"{random.Random(100 + i).getrandbits(256):064x}" for i in range(3)]
    values = noise + frames[3:8]
    query = [VpdqFeature(frame_number=i, quality=100, hash=h, timestamp=97.0 + i) for i, h in enumerate(values)]
    (match,) = match_video(db, query, percent=50)
    assert (match.query_start, match.query_end, match.entry_start, match.entry_end) == (100.0, 104.0, 6.0, 14.0)
    assert (match.query_match_percent, match.entry_match_percent) == (62.5, 50.0)


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
        matched = select(WebhookDelivery.payload).where(WebhookDelivery.event_type == "hash_match")
        payloads = session.scalars(matched).all()
    # (the server's database is shared with other tests of the module: other videos' matches may be there)
    events = [event for event in map(json.loads, payloads) if event["video_id"] == video_id]
    assert len(events) == 1, payloads
    assert events[0]["data"]["matches"][0]["bank"] == "ncmec-test"

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
