"""What ``vidgate upload`` shows: a progress bar per file on stderr, the outcome on stdout.

Progress goes to stderr. With ``--json`` (and with ``--wait`` when stdout is not a terminal,
i.e. piped or redirected) stdout carries JSON alone, one :class:`UploadResult` object per line
per uploaded file, and the human summary goes to stderr too; otherwise stdout carries the
summary and, with ``--wait``, the analysis result as indented JSON. Exit codes: 0 all uploaded
(and processed, with ``--wait``); 1 a file was refused, processing failed, or the server could
not be reached; 130 interrupted (run the same command again to resume).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from vidgate.client.core import VidgateClient
from vidgate.client.errors import ClientError, RequestRefused, ServerUnreachable
from vidgate.client.models import ProgressUpdate, UploadResult
from vidgate.config import CLIENT_API_KEY_ENV

PHASES = {"uploading": "", "verifying": " (verifying)", "waiting": " (processing)"}


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _summary(upload: UploadResult) -> str:
    lines = [
        f"{upload.path.name}",
        f"  sha256     {upload.sha256}",
        f"  session    {upload.session_id}",
        f"  video      {upload.video_id}",
        f"  duplicate  {'yes' if upload.duplicate else 'no'}",
    ]
    if upload.resumed:
        lines.append(
            f"  resumed    {upload.total_chunks - upload.chunks_sent} of {upload.total_chunks} chunks were already "
            f"on the server; sent {upload.chunks_sent}"
        )
    if upload.processing_status is not None:
        lines.append(f"  processing {upload.processing_status}")
    return "\n".join(lines)


class FileBar:
    """One file's line on the bar. Its task is made at the file's first update, with the total
    and the part an earlier run left on the server already done, so the first frame shows them
    and the transfer speed (estimated from later increments only) counts only what this run sends."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None

    def show(self, update: ProgressUpdate) -> None:
        description = update.path.name + PHASES[update.phase]
        if self.task is None:
            self.task = self.bar.add_task(description, total=update.bytes_total, completed=update.bytes_resumed)
        self.bar.update(self.task, completed=update.bytes_done, total=update.bytes_total, description=description)


def _upload_with_bar(client: VidgateClient, path: Path, console: Console, **options: Any) -> UploadResult:
    with _bar(console) as bar:
        return client.upload(path, progress=FileBar(bar).show, **options)


def run_uploads(
    files: Sequence[Path],
    *,
    server: str | None,
    api_key: str | None,
    parallel: int,
    priority: int | None,
    wait: bool,
    chunk_size: int,
    state_dir: Path | None,
    json_output: bool = False,
) -> int:
    """Upload ``files`` one after another; return the exit code. ``json_output`` (or ``wait``
    with stdout not a terminal) puts only JSON on stdout, for scripts (``| jq``)."""
    if not api_key:
        typer.echo(
            f"vidgate: no API key: pass --api-key or set {CLIENT_API_KEY_ENV} "
            "(the embedded server keeps its development key in vidgate-data/dev-api-key)",
            err=True,
        )
        return 1
    as_json = json_output or (wait and not sys.stdout.isatty())
    console = Console(stderr=True)
    failed = False
    with VidgateClient(server, api_key, state_dir=state_dir) as client:
        for path in files:
            try:
                upload = _upload_with_bar(
                    client, path, console, chunk_size=chunk_size, parallel=parallel, priority=priority, wait=wait
                )
            except KeyboardInterrupt:
                typer.echo(f"vidgate: {path.name}: interrupted; run the same command again to resume", err=True)
                return 130
            except RequestRefused as exc:
                typer.echo(f"vidgate: {path.name}: refused by the server: {exc}", err=True)
                if exc.code == "unauthenticated":
                    typer.echo(f"vidgate: check --api-key / {CLIENT_API_KEY_ENV}", err=True)
                    return 1
                failed = True
                continue
            except ServerUnreachable as exc:
                typer.echo(f"vidgate: {path.name}: server unreachable ({exc}); run again to resume", err=True)
                return 1
            except ClientError as exc:
                typer.echo(f"vidgate: {path.name}: {exc}", err=True)
                failed = True
                continue
            typer.echo(_summary(upload), err=as_json)
            if as_json:
                typer.echo(upload.model_dump_json())
            if upload.processing_status == "failed":
                typer.echo(f"vidgate: {path.name}: processing failed: {upload.processing_error}", err=True)
                failed = True
            elif wait and upload.result is not None and not as_json:
                typer.echo(upload.result.model_dump_json(indent=2))
    return 1 if failed else 0
