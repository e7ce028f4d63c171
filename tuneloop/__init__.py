"""tuneloop's composition root: the app factory, the HTTP routes, the CLI and the process
assemblies (serve, engine, monitor). Nothing imports it."""
