"""HTTP routes of the platform API (admin, registry, health). Serving routes live in serving/."""
