"""Where the completion of a tus upload on S3 spends its time, step by step, on a real
`vidgate serve` (STORAGE_BACKEND=s3, uploads in progress in the bucket) against the machine's
Swift.

    .venv/bin/python bench/s3_completion.py [--size-mib 110] [--runs 3] [--src DIR]

Each run uploads a new real video (raw frames in Matroska, its own bytes, so nothing is a
duplicate) with tus PATCHes of --patch-mib, then the same bytes again as a second upload (a
duplicate: the content is stored already). The server runs from --src (a checkout's src/, to
compare two versions on the same machine) with timing wrappers around the part store's and
the validator's methods (bench/s3_completion_serve.py); the table gives, per step, the median
seconds over the runs: the whole final PATCH (whose answer waits for the completion), and in
it assembly (CompleteMultipartUpload, or the check that the content is stored), validation
(formerly the download into the local cache plus the walk and probe), storing (the
server-side copy) and removal of what is left (on the answer's path or after it).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SWIFT = "http://127.0.0.1:16280"
BUCKET = "vidgate-bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test:tester", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
TUS = {"Tus-Resumable": "1.0.0"}
NAME = base64.b64encode(b"clip.mkv").decode()
STEP = re.compile(r"^BENCH-STEP (\S+) ([0-9.]+)$")


def make_video(path: Path, size_mib: int, seed: int) -> Path:
    """Raw frames in Matroska (as bench/ingest.py makes them), bytes of its own per seed."""
    import av
    import numpy as np

    width, height = 1280, 720
    frames = max(1, size_mib * (1 << 20) // (width * height * 3 // 2))
    base = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.roll(base, index, axis=1), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def ensure_bucket() -> None:
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    keys = {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }
    client = boto3.client("s3", endpoint_url=SWIFT, region_name="us-east-1", config=config, **keys)
    try:
        client.head_bucket(Bucket=BUCKET)
    except Exception:
        client.create_bucket(Bucket=BUCKET)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upload(client: httpx.Client, data: bytes, patch: int) -> tuple[str, str, float, float]:
    """One tus upload; returns (content hash answered, video id, seconds of the whole upload, of
    the final PATCH)."""
    started = time.perf_counter()
    created = client.post(
        "/v1/tus/", headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": f"filename {NAME}"}
    )
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    offset, final = 0, 0.0
    while offset < len(data):
        body = data[offset : offset + patch]
        sent = time.perf_counter()
        answer = client.patch(
            url,
            content=body,
            headers={**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        )
        assert answer.status_code == 204, answer.text
        final = time.perf_counter() - sent
        offset = int(answer.headers["Upload-Offset"])
    elapsed = time.perf_counter() - started
    return answer.headers.get("Vidgate-Content-Hash", ""), answer.headers.get("Vidgate-Video-Id", ""), elapsed, final


def settled(client: httpx.Client, video_id: str) -> None:
    """Wait until the video's processing (inline, in the server) ended: the next upload gets the CPU."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = client.get(f"/v1/videos/{video_id}").json()["data"]["status"]
        if status in ("completed", "failed"):
            return
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=110)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--patch-mib", type=int, default=32)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the vidgate sources the server runs")
    args = parser.parse_args()
    ensure_bucket()
    work = Path(tempfile.mkdtemp(prefix="s3-completion-"))
    port = free_port()
    prefix = f"completion-{uuid.uuid4().hex[:8]}/"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPLOAD_", "VIDGATE_", "DATABASE_", "STORAGE_"))}
    env.update(
        CREDENTIALS,
        PYTHONPATH=str(args.src.resolve()),
        VIDGATE_DATA_DIR=str(work / "data"),
        VIDGATE_LOG_LEVEL="warning",
        AUTH_CREATE_DEV_KEY="false",
        STORAGE_BACKEND="s3",
        STORAGE_S3_ENDPOINT_URL=SWIFT,
        STORAGE_S3_BUCKET=BUCKET,
        STORAGE_S3_PREFIX=prefix,
        STORAGE_S3_ADDRESSING_STYLE="path",
        STORAGE_PARTS="backend",
        UPLOAD_MAX_FILE_SIZE=f"{args.size_mib + 64}MiB",
    )
    key = subprocess.run(
        [sys.executable, "-m", "vidgate", "keys", "create", "--user", "bench"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    log = (work / "server.log").open("w+")
    server = subprocess.Popen(
        [sys.executable, str(BENCH / "s3_completion_serve.py"), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    steps: dict[str, dict[str, list[float]]] = {"new": defaultdict(list), "duplicate": defaultdict(list)}
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, (work / "server.log").read_text()[-3000:]
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
            for run in range(args.runs):
                path = make_video(work / f"clip-{run}.mkv", args.size_mib, seed=1000 + run + os.getpid())
                data = path.read_bytes()
                path.unlink()
                digest = hashlib.sha256(data).hexdigest()
                for kind in ("new", "duplicate"):
                    subprocess.run(["sync"], check=False)
                    log.seek(0, os.SEEK_END)
                    mark = log.tell()
                    answered, video_id, total, final = upload(client, data, args.patch_mib << 20)
                    assert answered == digest, (answered, digest)
                    settled(client, video_id)
                    time.sleep(1)  # background removal, if any, ends
                    log.flush()
                    log.seek(mark)
                    for line in log.read().splitlines():
                        found = STEP.match(line.strip())
                        if found:
                            steps[kind][found.group(1)].append(float(found.group(2)))
                    steps[kind]["final PATCH (answer)"].append(final)
                    steps[kind]["whole upload"].append(total)
                    print(f"run {run} {kind}: {len(data) / 1e6:.1f} MB, whole {total:.2f} s, final PATCH {final:.2f} s")
    finally:
        server.terminate()
        server.wait(timeout=30)
    order = ["adopt", "assemble", "part_path", "validate", "store", "remove-on-answer", "remove-background"]
    print(f"\nsrc: {args.src}   file: {args.size_mib} MiB   PATCH {args.patch_mib} MiB   runs: {args.runs}")
    print(f"{'step (median s)':32} {'new content':>12} {'duplicate':>12}")
    names = ["whole upload", "final PATCH (answer)"] + [
        n for n in order if n in steps["new"] or n in steps["duplicate"]
    ]
    for name in names:
        cells = []
        for kind in ("new", "duplicate"):
            values = steps[kind].get(name)
            cells.append(f"{statistics.median(values):12.2f}" if values else f"{'-':>12}")
        print(f"{name:32} {cells[0]} {cells[1]}")


if __name__ == "__main__":
    main()
