"""The OpenAI-compatible gateway: routes, limits, model resolution, hot swap."""
