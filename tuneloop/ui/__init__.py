"""The web console: a static single page at ``/ui`` that talks to the public JSON API."""
