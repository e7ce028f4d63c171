"""The engine key of the tests' session engine (engines refuse requests without it)."""

ENGINE_KEY = "engine-test-key"
ENGINE_AUTH = {"Authorization": f"Bearer {ENGINE_KEY}"}
