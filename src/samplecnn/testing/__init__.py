"""Builders of small fixtures in the real formats, for tests and examples."""
