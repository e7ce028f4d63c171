"""``tuneloop jobs``: create, list, show, events, cancel, wait (on the configured store, or over
HTTP with ``--url`` and a tenant's key).

On the store, ``jobs create`` runs the job in this process by default (validation, the Ray
training run, the publish step) and shows a live progress bar; Ctrl-C cancels it. With
``--detach`` it only queues the job: a running ``tuneloop serve`` (its job manager polls the
store) picks it up, and ``tuneloop jobs wait ID`` follows it from anywhere that reaches the same
store. Over HTTP the server runs the job; ``create`` and ``wait`` follow it by polling
``GET /v1/fine_tuning/jobs/{id}`` and its events.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import typer

from services.platform import Platform
from services.store.models import JobStatus, Tenant
from services.tenants import get_tenant
from training.jobs import store
from training.jobs.states import EventType
from tuneloop.cli.common import (
    API_KEY,
    EXIT_CODES,
    JSON,
    URL,
    emit,
    opened_platform,
    required_tenant,
    tenant_option,
)
from tuneloop.cli.remote import Api, ApiError, ExitCode, connect, quoted

app = typer.Typer(help="Create and follow fine-tuning jobs.", no_args_is_help=True,
                  epilog=EXIT_CODES)

TENANT = tenant_option("job")
JOBS = "/v1/fine_tuning/jobs"

Poll = Callable[[], tuple[dict, list[dict]]]
"""One look at a job: its object (as ``GET /v1/fine_tuning/jobs/{id}``) and its events since the
previous look, oldest first (as ``GET .../events``)."""


def _tenant(p: Platform, name: str) -> Tenant:
    with p.store.read() as session:
        t = get_tenant(session, name)
        session.expunge(t)
    return t


def _job_json(p: Platform, tenant: Tenant, job_id: str) -> dict:
    from tuneloop.api.jobs import job_out

    with p.store.read() as session:
        return job_out(store.get_job(session, tenant, job_id), tenant.name).model_dump(mode="json")


def _store_poll(p: Platform, tenant: Tenant, job_id: str) -> Poll:
    from tuneloop.api.jobs import event_out, job_out

    last_event: int | None = None

    def poll() -> tuple[dict, list[dict]]:
        nonlocal last_event
        with p.store.read() as session:
            job = job_out(store.get_job(session, tenant, job_id), tenant.name)
            events, _ = store.list_events(session, job_id, after=last_event, limit=1000,
                                          oldest_first=True)
            if events:
                last_event = events[-1].id
            return job.model_dump(mode="json"), [event_out(e).model_dump(mode="json")
                                                 for e in events]

    return poll


POLL_OUTAGE_S = 300.0
"""How long ``jobs wait`` over HTTP keeps polling through a gateway that is unreachable or
answers 429/5xx (a rolling restart, a busy replica) before it gives up with exit code 6."""


def _http_poll(api: Api, job_id: str, outage_s: float = POLL_OUTAGE_S) -> Poll:
    last_event: str | None = None
    seen = False  # the first poll fails at once: a wrong URL or id is not an outage

    def once() -> tuple[dict, list[dict]]:
        nonlocal last_event
        job = api.get(f"{JOBS}/{quoted(job_id)}")
        events = api.get(f"{JOBS}/{quoted(job_id)}/events", after=last_event, limit=1000,
                         order="asc")["data"]
        if events:
            last_event = events[-1]["id"]
        return job, events

    def poll() -> tuple[dict, list[dict]]:
        nonlocal seen
        deadline, delay = time.monotonic() + outage_s, 1.0
        while True:
            try:
                result = once()
                seen = True
                return result
            except ApiError as exc:
                if not seen or exc.exit_code != ExitCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                typer.echo(f"warning: {exc.message}; retrying in {delay:.0f} s", err=True)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    return poll


def _parse_hp(values: list[str]) -> dict:
    out = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--hp {item!r}: use key=value, e.g. --hp n_epochs=2")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw  # strings such as "auto" or "all-linear"
    return out


def _is_path(value: str) -> bool:
    """A --training-file / --validation-file that names a dataset to upload, not a file id."""
    return not value.startswith("file-") and Path(value).is_file()


@app.command("create")
def create(
    training_file: str = typer.Option(..., "--training-file", "-f",
                                      help="A file id, or a dataset path to upload first."),
    tenant: str | None = TENANT,
    model: str = typer.Option(None, help="Base model name (default) or an adapter name / "
                                         "name@vN to warm-start from."),
    suffix: str = typer.Option(None, help="Adapter name of the result."),
    validation_file: str = typer.Option(None, help="A file id or path (default: a hash split)."),
    task: str = typer.Option(None, help="chat or classification (default: the file's)."),
    labels: str = typer.Option(None, help="Comma-separated label set (classification)."),
    prompt_template: str = typer.Option(None, help="Classification template with {text}."),
    hp: list[str] = typer.Option(None, "--hp", help="Hyperparameter key=value (repeatable): "
                                 "n_epochs, batch_size, learning_rate_multiplier, lora_r, "
                                 "lora_alpha, lora_dropout, target_modules, max_length, packing, "
                                 "max_steps, ..."),
    seed: int = typer.Option(None, help="Seed (default: random, recorded with the job)."),
    auto_promote: bool = typer.Option(False, help="Make the result the champion."),
    detach: bool = typer.Option(False, help="Only queue the job; a running `tuneloop serve` "
                                            "runs it (over HTTP: do not follow it)."),
    as_json: bool = typer.Option(False, "--json", help="Print the job as JSON instead of its "
                                 "id (--detach) or fine_tuned_model."),
    url: str | None = URL, api_key: str | None = API_KEY,
) -> None:
    """Create a fine-tuning job; by default run it here with a live progress bar (over HTTP:
    follow it on the server; Ctrl-C stops following, not the job)."""
    # The API's JSON body (JobCreate); on the store the same fields make a JobRequest.
    body = {"model": model, "training_file": training_file, "validation_file": validation_file,
            "suffix": suffix, "hyperparameters": _parse_hp(hp), "task": task,
            "labels": [x.strip() for x in labels.split(",")] if labels else None,
            "prompt_template": prompt_template, "auto_promote": auto_promote, "seed": seed}
    if url:
        _create_remote(body, detach, as_json, url, api_key)
    else:
        _create_here(body, required_tenant(tenant), detach, as_json)


def _create_here(body: dict, tenant: str, detach: bool, as_json: bool) -> None:
    from training.jobs.files import store_file
    from training.jobs.intake import JobRequest, create_job

    with opened_platform() as p:
        t = _tenant(p, tenant)

        def file_id(value: str | None) -> str | None:
            if value is None or not _is_path(value):
                return value
            row = store_file(p, t, Path(value).read_bytes(), Path(value).name, "fine-tune",
                             body["task"])
            typer.echo(f"uploaded {value} as {row.id}", err=True)
            return row.id

        job = create_job(p, t, JobRequest(**{
            **body, "model": body["model"] or p.base_model_name,
            "training_file": file_id(body["training_file"]),
            "validation_file": file_id(body["validation_file"])}))
        typer.echo(f"created {job.id} ({job.task} adapter {job.adapter_name!r})", err=True)
        if detach:
            _print_created(_job_json(p, t, job.id), as_json)
            return
        final = _run_here(p, t, job.id)
    _finish(final, as_json)


def _create_remote(body: dict, detach: bool, as_json: bool, url: str,
                   api_key: str | None) -> None:
    with connect(url, api_key) as api:
        if body["model"] is None:
            body["model"] = _base_model(api)
        for field in ("training_file", "validation_file"):
            if body[field] is not None and _is_path(body[field]):
                path = Path(body[field])
                body[field] = api.upload("/v1/files", path, {"purpose": "fine-tune",
                                                             "task": body["task"]})["id"]
                typer.echo(f"uploaded {path} as {body[field]}", err=True)
        job = api.post(JOBS, {k: v for k, v in body.items() if v is not None})
        typer.echo(f"created {job['id']} ({job['task']} adapter {job['suffix']!r})", err=True)
        if detach:
            _print_created(job, as_json)
            return
        try:
            final = _follow(_http_poll(api, job["id"]))
        except KeyboardInterrupt:
            typer.echo(f"\nstopped following; {job['id']} goes on on the server (tuneloop jobs "
                       f"wait {job['id']} / tuneloop jobs cancel {job['id']})", err=True)
            raise typer.Exit(130) from None
    _finish(final, as_json)


def _base_model(api: Api) -> str:
    """The server's base model name: the first entry of ``GET /v1/models``, which only a
    server with serving on has (elsewhere the path is unknown, or only DELETE)."""
    try:
        return api.get("/v1/models")["data"][0]["id"]
    except ApiError as exc:
        if exc.exit_code in (ExitCode.UNAUTHORIZED, ExitCode.UNAVAILABLE):
            raise
        raise ApiError("this server does not list its models (serving is off); pass the base "
                       "model's name with --model", ExitCode.INVALID_SETTINGS) from exc


def _print_created(job: dict, as_json: bool) -> None:
    if as_json:
        emit(job)
    else:
        typer.echo(job["id"])


def _run_here(p: Platform, tenant: Tenant, job_id: str) -> dict:
    from training.jobs.manager import JobManager

    manager = JobManager(p)
    thread = threading.Thread(target=manager.run_job, args=(job_id,), daemon=True)
    thread.start()
    poll = _store_poll(p, tenant, job_id)
    try:
        job = _follow(poll, until=lambda: not thread.is_alive())
    except KeyboardInterrupt:
        typer.echo("\ncancelling (Ctrl-C)...", err=True)
        with p.store.write() as session:
            row = store.get_job(session, tenant, job_id)
            if not JobStatus(row.status).is_terminal:
                store.request_cancel(session, tenant, job_id)
        thread.join()
        job = _follow(poll, until=lambda: True)
    finally:
        thread.join()
        manager.stop()
    return job


def _follow(poll: Poll, until: Callable[[], bool] | None = None, poll_s: float = 1.0) -> dict:
    """Print events and a progress bar (step, loss, tokens/s, ETA) until the job is terminal;
    returns the job's last object."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
               TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn()]
    job, events = poll()  # a job that does not exist fails before a bar is drawn
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("queued", total=None, loss="-", speed="-", eta="-")
        while True:
            for event in events:
                if event["type"] != EventType.METRICS:
                    bar.console.print(f"[dim]{event['type']:>10}[/dim] "
                                      f"{escape(event['message'])}")
            status = JobStatus(job["status"])
            snap = job["progress"] or {}
            eta = snap.get("eta_s")
            bar.update(task, description=str(status), total=snap.get("total_steps"),
                       completed=snap.get("step") or 0,
                       loss=f"{snap['loss']:.4f}" if snap.get("loss") is not None else "-",
                       speed=f"{snap['tokens_per_s']:.0f}" if snap.get("tokens_per_s") else "-",
                       eta=time.strftime("%M:%S", time.gmtime(eta)) if eta is not None else "-")
            if status.is_terminal and (until is None or until()):
                return job
            time.sleep(poll_s)
            job, events = poll()


def _finish(job: dict, as_json: bool) -> None:
    """Print a followed job's outcome (fine_tuned_model, or its error) and exit 0 when it
    succeeded, 1 when it failed or was cancelled."""
    succeeded = job["status"] == JobStatus.SUCCEEDED
    if as_json:
        emit(job)
    elif succeeded:
        typer.echo(job["fine_tuned_model"])
    elif job["error"]:
        typer.echo(f"error: {job['error'].get('message')}", err=True)
    raise typer.Exit(0 if succeeded else 1)


@app.command("wait")
def wait(job_id: str, tenant: str | None = TENANT,
         poll_s: float = typer.Option(1.0, help="Seconds between polls."),
         as_json: bool = typer.Option(False, "--json", help="Print the final job as JSON."),
         url: str | None = URL, api_key: str | None = API_KEY) -> None:
    """Follow a job to its end with a live progress bar; prints fine_tuned_model.

    Exit code 0 when it succeeded, 1 when it failed or was cancelled.
    """
    if url:
        with connect(url, api_key) as api:
            job = _follow(_http_poll(api, job_id), poll_s=poll_s)
    else:
        owner = required_tenant(tenant)
        with opened_platform() as p:
            job = _follow(_store_poll(p, _tenant(p, owner), job_id), poll_s=poll_s)
    _finish(job, as_json)


@app.command("list")
def list_(tenant: str | None = TENANT, limit: int = typer.Option(20), as_json: bool = JSON,
          url: str | None = URL, api_key: str | None = API_KEY) -> None:
    """List the tenant's jobs, newest first."""
    if url:
        with connect(url, api_key) as api:
            data = api.get(JOBS, limit=limit)["data"]
    else:
        from tuneloop.api.jobs import job_out

        owner = required_tenant(tenant)
        with opened_platform() as p, p.store.read() as session:
            t = get_tenant(session, owner)
            rows, _ = store.list_jobs(session, t, limit=limit)
            data = [job_out(r, t.name).model_dump(mode="json") for r in rows]
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for j in data:
        typer.echo(f"{j['id']}\t{j['status']}\t{j['task']}\t{j['suffix']}\t"
                   f"{j['fine_tuned_model'] or '-'}")


@app.command("show")
def show(job_id: str, tenant: str | None = TENANT, url: str | None = URL,
         api_key: str | None = API_KEY) -> None:
    """Show a job as JSON (status, hyperparameters, progress, error, fine_tuned_model)."""
    if url:
        with connect(url, api_key) as api:
            job = api.get(f"{JOBS}/{quoted(job_id)}")
    else:
        owner = required_tenant(tenant)
        with opened_platform() as p:
            job = _job_json(p, _tenant(p, owner), job_id)
    typer.echo(json.dumps(job, indent=2))


@app.command("events")
def events(job_id: str, tenant: str | None = TENANT, limit: int = typer.Option(100),
           as_json: bool = JSON, url: str | None = URL, api_key: str | None = API_KEY) -> None:
    """Print a job's latest events, oldest first."""
    if url:
        with connect(url, api_key) as api:
            newest_first = api.get(f"{JOBS}/{quoted(job_id)}/events", limit=limit)["data"]
    else:
        from tuneloop.api.jobs import event_out

        owner = required_tenant(tenant)
        with opened_platform() as p:
            t = _tenant(p, owner)
            with p.store.read() as session:
                store.get_job(session, t, job_id)
                rows, _ = store.list_events(session, job_id, limit=limit)
                newest_first = [event_out(e).model_dump(mode="json") for e in rows]
    oldest_first = list(reversed(newest_first))
    if as_json:
        emit(oldest_first)
        return
    for e in oldest_first:
        stamp = time.strftime("%H:%M:%S", time.localtime(e["created_at"]))
        typer.echo(f"{stamp}\t{e['type']}\t{e['message']}")


@app.command("cancel")
def cancel(job_id: str, tenant: str | None = TENANT, url: str | None = URL,
           api_key: str | None = API_KEY) -> None:
    """Cancel a job: at once when it has not started, else its manager stops the run."""
    if url:
        with connect(url, api_key) as api:
            status = api.post(f"{JOBS}/{quoted(job_id)}/cancel")["status"]
    else:
        owner = required_tenant(tenant)
        with opened_platform() as p:
            t = _tenant(p, owner)
            with p.store.write() as session:
                status = store.request_cancel(session, t, job_id).status
    typer.echo(f"{job_id}: {'cancel requested' if status == 'running' else status}")
