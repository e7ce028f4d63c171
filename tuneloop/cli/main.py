"""The ``tuneloop`` command: one entry point, one module per subcommand group."""

from __future__ import annotations

import typer

from tuneloop.cli import adapters, demo, engine, files, jobs, keys, models, monitor, serve, tenants

app = typer.Typer(
    name="tuneloop",
    help="Serve one base LLM with many LoRA adapters and fine-tune them continuously.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(models.app, name="models")
app.add_typer(tenants.app, name="tenants")
app.add_typer(keys.app, name="keys")
app.add_typer(adapters.app, name="adapters")
app.add_typer(files.app, name="files")
app.add_typer(jobs.app, name="jobs")
serve.register(app)
engine.register(app)
monitor.register(app)
demo.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
