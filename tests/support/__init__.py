"""Helpers shared by the test suites (see ``service`` for the PVC service fixture)."""
