"""``vidgate serve | migrate | cleanup | keys | webhooks | banks | storage | settings | upload``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from vidgate.config import (
    CLIENT_API_KEY_ENV,
    CLIENT_STATE_DIR_ENV,
    CLIENT_URL_ENV,
    Settings,
    SettingsError,
    all_env_names,
    load_settings,
)
from vidgate.logs import configure_logging
from vidgate.roles import DEFAULT_ROLE, Role

T = TypeVar("T")

app = typer.Typer(help="vidgate: resumable video ingest.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
webhooks_app = typer.Typer(help="Manage users' webhook URLs.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")
banks_app = typer.Typer(help="Manage hash banks (known vPDQ/PDQ hashes every video is matched against).")
banks_app.info.no_args_is_help = True
app.add_typer(banks_app, name="banks")
storage_app = typer.Typer(help="The blob store (STORAGE_BACKEND: local disk or an S3 bucket).", no_args_is_help=True)
app.add_typer(storage_app, name="storage")


def _settings(**overrides: Mapping[str, object]) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        typer.echo(f"vidgate: configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _database(settings: Settings):  # type: ignore[no-untyped-def]
    from vidgate.app import prepare_database
    from vidgate.db.engine import Database

    db = Database(settings.database_url)
    try:
        prepare_database(settings, db)
    except Exception as exc:
        typer.echo(f"vidgate: database not ready: {exc}", err=True)
        raise typer.Exit(1) from exc
    return db


def _storage(settings: Settings) -> None:
    """Start-up check of the blob store: refused credentials or a missing bucket stop the
    command (an operator must act: the message says what to set); a store that is merely
    unreachable is reported and the command goes on (``/ready`` says not ready meanwhile)."""
    from vidgate.errors import StorageMisconfigured, StorageUnavailable
    from vidgate.wiring import make_blob_store

    try:
        make_blob_store(settings).check()
    except StorageMisconfigured as exc:
        typer.echo(f"vidgate: storage not usable: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    except StorageUnavailable as exc:
        typer.echo(f"vidgate: warning: storage not reachable yet: {exc.message}", err=True)


def _run_as_module(environment: Mapping[str, str] | None = None) -> None:
    """Replace this process with ``python -m vidgate`` and the same arguments, with
    ``environment`` added, when it was started as the ``vidgate`` console script, or as
    ``python -m vidgate`` without those variables (glibc reads some only at a process's start).

    Probe children are forked from multiprocessing's forkserver, and each first re-runs the
    parent's main *script* (``.venv/bin/vidgate``: it imports the whole CLI, ~30 ms of CPU per
    upload, measured); a main run with ``-m`` as ``vidgate.__main__`` is not re-run."""
    main = sys.modules["__main__"]
    script = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    missing = {name: value for name, value in (environment or {}).items() if os.environ.get(name) != value}
    if spec is not None:
        if spec.name != "vidgate.__main__" or not missing:
            return  # already ``python -m vidgate`` as wanted, or a module of its own that runs this CLI
    elif script is None or Path(script).name != "vidgate":
        return  # a program of its own that runs this CLI: left as it is
    os.environ.update(missing)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "vidgate", *sys.argv[1:]])


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default VIDGATE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default VIDGATE_PORT).")] = None,
) -> None:
    """Start the API server (embedded default: SQLite + local disk, nothing else needed)."""
    from vidgate.allocator import arena_environment

    server = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = _settings(server=server)
    _run_as_module(arena_environment(settings.server.malloc_arena_max))
    import uvicorn

    from vidgate.app import ensure_dev_key, uvicorn_config

    configure_logging(settings)
    db = _database(settings)
    _storage(settings)
    key = ensure_dev_key(settings, db)
    db.dispose()
    if key:
        typer.echo(f"Development API key for user 'dev' (also saved in {settings.server.data_dir}/dev-api-key):")
        typer.echo(f"  {key}")
    uvicorn.Server(uvicorn_config(settings)).run()


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs at once (default PROCESSING_MAX_CONCURRENT_JOBS).")
    ] = None,
    beat: Annotated[
        bool, typer.Option(help="Also run the beat schedule (session cleanup, the processing sweep).")
    ] = False,
    hostname: Annotated[
        str | None,
        typer.Option(
            help="This worker's name: NAME (@ this host is added) or NAME@HOST, %h and %n expand as in Celery. "
            "Default vidgate-<pid>@<host>, unique per process. Logs and job leases carry it.",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this worker's Prometheus metrics (all pool processes) on this port.")
    ] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="Address the metrics endpoint binds (default METRICS_HOST, 127.0.0.1).")
    ] = None,
) -> None:
    """Start a Celery worker for the distributed mode (Redis from CELERY_BROKER_URL)."""
    settings = _settings()
    name = worker_name(hostname)
    if metrics_port is not None:  # first: before anything imports prometheus_client
        from vidgate.processing import worker_metrics

        token = settings.metrics.token
        host = metrics_host or settings.metrics.host
        try:
            worker_metrics.serve(metrics_port, host, token.get_secret_value() if token else None)
        except OSError as exc:
            typer.echo(f"vidgate: cannot serve metrics on {host}:{metrics_port}: {exc}", err=True)
            raise typer.Exit(1) from exc
    _database(settings).dispose()
    _storage(settings)
    from celery.signals import setup_logging

    from vidgate.processing.worker import create_worker

    celery = create_worker(settings)

    @setup_logging.connect  # type: ignore[untyped-decorator]
    def _logging(**_: object) -> None:  # our format (LOG_FORMAT) instead of Celery's
        configure_logging(settings, fields={"worker": name})

    argv = [
        "worker",
        f"--loglevel={settings.server.log_level.upper()}",
        f"--concurrency={concurrency or settings.processing.max_concurrent_jobs}",
        f"--hostname={name}",
        "--without-gossip",
        "--without-mingle",
    ]
    if beat:
        schedule = settings.server.data_dir / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={schedule}"]
    celery.worker_main(argv)


def worker_name(hostname: str | None) -> str:
    """The Celery node name of this worker: ``--hostname`` with ``@<host>`` added when it names
    no host, and Celery's %h / %n / %d expanded; by default ``vidgate-<pid>@<host>``."""
    from celery.utils.nodenames import host_format

    from vidgate.processing.lease import process_name

    if not hostname:
        return process_name()
    return str(host_format(hostname if "@" in hostname else f"{hostname}@%h"))


@app.command()
def migrate() -> None:
    """Create or update the database tables (Alembic)."""
    from vidgate.db import migrate as migrations
    from vidgate.db.engine import Database

    settings = _settings()
    db = Database(settings.database_url)
    migrations.upgrade(db)
    db.dispose()
    typer.echo(f"database at {db.engine.url.render_as_string(hide_password=True)} is up to date")


@app.command()
def cleanup() -> None:
    """Expire old sessions and remove their part files and orphans, once."""
    from vidgate.wiring import build_services

    settings = _settings()
    _database(settings).dispose()
    services = build_services(settings)
    report = services.cleanup.run()
    services.db.dispose()
    typer.echo(report.model_dump_json(indent=2))


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="User name the key belongs to.")],
    label: Annotated[str | None, typer.Option(help="A note to recognise the key by.")] = None,
    role: Annotated[
        Role,
        typer.Option(
            help="viewer (read only), uploader (read, upload, delete), reviewer (read, review) or admin (all)."
        ),
    ] = DEFAULT_ROLE,
) -> None:
    """Create an API key and print it (it is stored only as a hash: copy it now)."""
    from vidgate.auth import create_key

    db = _database(_settings())
    key, info = create_key(db, user, label, role=role)
    db.dispose()
    typer.echo(key)
    typer.echo(f"created {info.role.value} key {info.id} ({info.key_prefix}...) for user {user}", err=True)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (prefix, user, state); never the keys themselves."""
    from vidgate.auth import list_keys

    db = _database(_settings())
    for info in list_keys(db):
        state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
        typer.echo(
            f"{info.id}  {info.key_prefix}...  {info.username:<20} {info.role.value:<9} {state:<24} {info.label or ''}"
        )
    db.dispose()


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id or prefix (as `keys list` shows).")]) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from vidgate.auth import revoke_key

    info = _with_database(lambda db: revoke_key(db, key))
    typer.echo(f"revoked {info.id} ({info.key_prefix}...) of {info.username}")


def _with_database(action: Callable[[Any], T]) -> T:
    """Run ``action(db)``; a refusal (unknown user, bad URL) becomes a message and exit code 1."""
    from vidgate.errors import VidgateError

    db = _database(_settings())
    try:
        return action(db)
    except VidgateError as exc:
        typer.echo(f"vidgate: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()


@webhooks_app.command("set")
def webhooks_set(
    user: Annotated[str, typer.Option("--user", help="User name.")],
    url: Annotated[str, typer.Option("--url", help="http(s) URL receiving signed POSTs.")],
) -> None:
    """Point a user's webhook at URL and print its new signing secret."""
    from vidgate.events.webhooks import set_webhook

    typer.echo(_with_database(lambda db: set_webhook(db, user, url)))


@webhooks_app.command("clear")
def webhooks_clear(user: Annotated[str, typer.Option("--user", help="User name.")]) -> None:
    """Stop sending webhooks to a user."""
    from vidgate.events.webhooks import clear_webhook

    _with_database(lambda db: clear_webhook(db, user))


def _bank_action(action: Callable[[Any], T]) -> T:
    """Run ``action(db)``; an unusable file or name becomes its message and exit code 1."""
    from vidgate.moderation.banks import BankError

    db = _database(_settings())
    try:
        return action(db)
    except (BankError, OSError, UnicodeDecodeError) as exc:
        typer.echo(f"vidgate: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()


@banks_app.command("import")
def banks_import(
    name: Annotated[str, typer.Argument(help="Bank name (created if new; entries are added).")],
    file: Annotated[Path, typer.Argument(help="vPDQ text, ThreatExchange/HMA JSON or signal lines, or PDQ per line.")],
) -> None:
    """Import a hash list into a bank; a bad line anywhere imports nothing."""
    from vidgate.moderation.banks import import_bank, parse_bank_file

    summary = _bank_action(lambda db: import_bank(db, name, parse_bank_file(file)))
    typer.echo(f"bank {summary.name}: {summary.entries} entries, {summary.frames} hashes")
    typer.echo("stored videos are matched against the new entries by the server's dispatcher rounds")


@banks_app.command("list")
def banks_list() -> None:
    """List banks with their entry and hash counts."""
    from vidgate.moderation.banks import list_banks

    for bank in _bank_action(list_banks):
        typer.echo(f"{bank.name:<32} {bank.entries:>10} entries {bank.frames:>12} hashes")


@banks_app.command("delete")
def banks_delete(name: Annotated[str, typer.Argument(help="Bank name.")]) -> None:
    """Delete a bank and all its entries (videos already flagged keep their verdict)."""
    from vidgate.moderation.banks import delete_bank

    if not _bank_action(lambda db: delete_bank(db, name)):
        typer.echo(f"vidgate: no bank {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"deleted bank {name}")


@banks_app.command("rematch")
def banks_rematch(
    name: Annotated[str | None, typer.Argument(help="Bank name (default: every bank).")] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Match against every entry again, not only those imported since the last pass "
            "(after changing MODERATION_MATCH_*, say).",
        ),
    ] = False,
) -> None:
    """Match the stored videos against bank entries now, instead of in the server's dispatcher
    rounds; a new match flags the video and tells each owner (hash_match event and webhook)."""
    from vidgate.moderation import rematch
    from vidgate.wiring import build_services

    settings = _settings()
    _database(settings).dispose()
    services = build_services(settings)
    try:
        if name is not None and not rematch.bank_exists(services.db, name):
            typer.echo(f"vidgate: no bank {name!r}", err=True)
            raise typer.Exit(1)
        if full:
            rematch.restart(services.db, name)
        reports = rematch.run_all(services.db, services.events, settings.moderation, name)
    finally:
        services.close()
    totals: dict[str, list[int]] = {}
    for report in reports:
        seen = totals.setdefault(report.bank or "", [0, 0])
        seen[0] += report.contents
        seen[1] += report.flagged
    for bank, (contents, flagged) in totals.items():
        typer.echo(f"bank {bank}: {contents} stored videos matched, {flagged} newly flagged")
    if not totals:
        typer.echo("nothing to re-match: every stored video was matched against every entry")


@storage_app.command("init")
def storage_init() -> None:
    """Create the S3 bucket (STORAGE_S3_BUCKET) if it does not exist, and check it can be used."""
    from vidgate.errors import StorageUnavailable
    from vidgate.storage.s3 import S3BlobStore
    from vidgate.wiring import make_blob_store

    settings = _settings()
    store = make_blob_store(settings)
    try:
        if isinstance(store, S3BlobStore):
            created = store.create_bucket()
            store.check()
            state = "created" if created else "already there"
            typer.echo(f"bucket {store.bucket!r} at {settings.storage.s3_endpoint_url or 'AWS S3'}: {state}, usable")
        else:
            store.check()
            typer.echo(f"local storage at {settings.storage_dir}: usable (STORAGE_BACKEND=local needs no init)")
    except StorageUnavailable as exc:
        typer.echo(f"vidgate: {exc.message}", err=True)
        raise typer.Exit(1) from exc


@app.command("settings")
def show_settings() -> None:
    """Print every setting with its environment variable and current value."""
    settings = _settings()
    for env, (group, field) in sorted(all_env_names().items()):
        value = getattr(getattr(settings, group), field)
        typer.echo(f"{env}={value}")


def _byte_size(text: str) -> int:
    """``10485760`` or ``10MiB``, as the server's size settings take them."""
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        size = int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError as exc:
        raise typer.BadParameter(f"{text!r} is not a size (bytes, or e.g. 8MiB)") from exc
    if size < 1:
        raise typer.BadParameter("must be at least 1 byte")
    return size


@app.command()
def upload(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Video files.", metavar="FILE", exists=True, dir_okay=False, readable=True, show_default=False
        ),
    ],
    parallel: Annotated[int, typer.Option(min=1, max=64, help="Chunks in flight at once.")] = 1,
    priority: Annotated[
        int | None, typer.Option(help="Processing priority, 1-10 (default: the server's).", show_default=False)
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow processing and print the analysis result as JSON.")
    ] = False,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Only JSON on stdout: one object per uploaded file and line (the default with --wait "
            "when stdout is not a terminal); the summary goes to stderr.",
        ),
    ] = False,
    server: Annotated[
        str | None, typer.Option(envvar=CLIENT_URL_ENV, help="Server URL (default http://127.0.0.1:8000).")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar=CLIENT_API_KEY_ENV, help="API key.", show_default=False)] = None,
    chunk_size: Annotated[
        int, typer.Option(parser=_byte_size, metavar="BYTES", help="Chunk size, in bytes or e.g. 8MiB.")
    ] = 10 * 1024 * 1024,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            envvar=CLIENT_STATE_DIR_ENV,
            file_okay=False,
            help="Where resume state is kept (default ~/.cache/vidgate/uploads).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Upload videos to a running server: chunked, parallel if asked, resumed when run again."""
    from vidgate.client.console import run_uploads

    code = run_uploads(
        files,
        server=server,
        api_key=api_key,
        parallel=parallel,
        priority=priority,
        wait=wait,
        chunk_size=chunk_size,
        state_dir=state_dir,
        json_output=json_output,
    )
    raise typer.Exit(code)


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
