"""Fixtures, fakes and helpers shared by the test packages (import as ``tests.support.X``)."""
