"""``tuneloop jobs``: create, list, show, events, cancel, wait (on the configured store).

``jobs create`` runs the job in this process by default (validation, the Ray training run, the
publish step) and shows a live progress bar; Ctrl-C cancels it. With ``--detach`` it only queues
the job: a running ``tuneloop serve`` (its job manager polls the store) picks it up, and
``tuneloop jobs wait ID`` follows it from anywhere that reaches the same store.
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
from tuneloop.cli.common import opened_platform

app = typer.Typer(help="Create and follow fine-tuning jobs.", no_args_is_help=True)

TENANT = typer.Option(..., "--tenant", "-t", help="Tenant owning the job.")


def _tenant(p: Platform, name: str) -> Tenant:
    with p.store.read() as session:
        t = get_tenant(session, name)
        session.expunge(t)
    return t


def _job_json(p: Platform, tenant: Tenant, job_id: str) -> dict:
    from tuneloop.api.jobs import job_out

    with p.store.read() as session:
        return job_out(store.get_job(session, tenant, job_id), tenant.name).model_dump(mode="json")


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


@app.command("create")
def create(
    training_file: str = typer.Option(..., "--training-file", "-f",
                                      help="A file id, or a dataset path to upload first."),
    tenant: str = TENANT,
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
                                            "runs it."),
) -> None:
    """Create a fine-tuning job; by default run it here with a live progress bar."""
    from training.jobs.files import store_file
    from training.jobs.intake import JobRequest, create_job

    with opened_platform() as p:
        t = _tenant(p, tenant)

        def file_id(value: str) -> str:
            if value.startswith("file-") or not Path(value).is_file():
                return value
            row = store_file(p, t, Path(value).read_bytes(), Path(value).name, "fine-tune", task)
            typer.echo(f"uploaded {value} as {row.id}", err=True)
            return row.id

        job = create_job(p, t, JobRequest(
            model=model or p.base_model_name, training_file=file_id(training_file),
            validation_file=file_id(validation_file) if validation_file is not None else None,
            suffix=suffix, hyperparameters=_parse_hp(hp),
            task=task, labels=[x.strip() for x in labels.split(",")] if labels else None,
            prompt_template=prompt_template, auto_promote=auto_promote, seed=seed))
        typer.echo(f"created {job.id} ({job.task} adapter {job.adapter_name!r})", err=True)
        if detach:
            typer.echo(job.id)
            return
        final = _run_here(p, t, job.id)
    raise typer.Exit(0 if final == JobStatus.SUCCEEDED else 1)


def _run_here(p: Platform, tenant: Tenant, job_id: str) -> JobStatus:
    from training.jobs.manager import JobManager

    manager = JobManager(p)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(status=manager.run_job(job_id)),
                              daemon=True)
    thread.start()
    try:
        status = _follow(p, tenant, job_id, until=lambda: not thread.is_alive())
    except KeyboardInterrupt:
        typer.echo("\ncancelling (Ctrl-C)...", err=True)
        with p.store.write() as session:
            job = store.get_job(session, tenant, job_id)
            if not JobStatus(job.status).is_terminal:
                store.request_cancel(session, tenant, job_id)
        thread.join()
        status = _follow(p, tenant, job_id, until=lambda: True)
    finally:
        thread.join()
        manager.stop()
    return status


def _follow(p: Platform, tenant: Tenant, job_id: str,
            until: Callable[[], bool] | None = None, poll_s: float = 1.0
            ) -> JobStatus:
    """Print events and a progress bar (step, loss, tokens/s, ETA) until the job is terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
               TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn()]
    last_event = None
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("queued", total=None, loss="-", speed="-", eta="-")
        while True:
            with p.store.read() as session:
                job = store.get_job(session, tenant, job_id)
                events, _ = store.list_events(session, job_id, after=last_event, limit=1000,
                                              oldest_first=True)
            for event in events:
                last_event = event.id
                if event.type != EventType.METRICS:
                    bar.console.print(f"[dim]{event.type:>10}[/dim] {event.message}")
            status = JobStatus(job.status)
            snap = job.progress or {}
            eta = snap.get("eta_s")
            bar.update(task, description=str(status), total=snap.get("total_steps"),
                       completed=snap.get("step") or 0,
                       loss=f"{snap['loss']:.4f}" if snap.get("loss") is not None else "-",
                       speed=f"{snap['tokens_per_s']:.0f}" if snap.get("tokens_per_s") else "-",
                       eta=time.strftime("%M:%S", time.gmtime(eta)) if eta is not None else "-")
            if status.is_terminal and (until is None or until()):
                break
            time.sleep(poll_s)
    if status is JobStatus.SUCCEEDED:
        typer.echo(job.fine_tuned_model)
    elif job.error:
        typer.echo(f"error: {job.error.get('message')}", err=True)
    return status


@app.command("wait")
def wait(job_id: str, tenant: str = TENANT,
         poll_s: float = typer.Option(1.0, help="Seconds between polls.")) -> None:
    """Follow a job to its end with a live progress bar; prints fine_tuned_model.

    Exit code 0 when it succeeded, 1 when it failed or was cancelled.
    """
    with opened_platform() as p:
        status = _follow(p, _tenant(p, tenant), job_id, poll_s=poll_s)
    raise typer.Exit(0 if status is JobStatus.SUCCEEDED else 1)


@app.command("list")
def list_(tenant: str = TENANT, limit: int = typer.Option(20),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """List the tenant's jobs, newest first."""
    from tuneloop.api.jobs import job_out

    with opened_platform() as p, p.store.read() as session:
        t = get_tenant(session, tenant)
        rows, _ = store.list_jobs(session, t, limit=limit)
        data = [job_out(r, t.name).model_dump(mode="json") for r in rows]
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for j in data:
        typer.echo(f"{j['id']}\t{j['status']}\t{j['task']}\t{j['suffix']}\t"
                   f"{j['fine_tuned_model'] or '-'}")


@app.command("show")
def show(job_id: str, tenant: str = TENANT) -> None:
    """Show a job as JSON (status, hyperparameters, progress, error, fine_tuned_model)."""
    with opened_platform() as p:
        typer.echo(json.dumps(_job_json(p, _tenant(p, tenant), job_id), indent=2))


@app.command("events")
def events(job_id: str, tenant: str = TENANT, limit: int = typer.Option(100)) -> None:
    """Print a job's events, oldest first."""
    with opened_platform() as p:
        t = _tenant(p, tenant)
        with p.store.read() as session:
            store.get_job(session, t, job_id)
            rows, _ = store.list_events(session, job_id, limit=limit)
    for e in reversed(rows):
        stamp = time.strftime("%H:%M:%S", time.localtime(store.unix(e.created_at)))
        typer.echo(f"{stamp}\t{e.type}\t{e.message}")


@app.command("cancel")
def cancel(job_id: str, tenant: str = TENANT) -> None:
    """Cancel a job: at once when it has not started, else its manager stops the run."""
    with opened_platform() as p:
        t = _tenant(p, tenant)
        with p.store.write() as session:
            job = store.request_cancel(session, t, job_id)
    typer.echo(f"{job_id}: {'cancel requested' if job.status == 'running' else job.status}")
