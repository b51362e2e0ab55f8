"""Builders of small synthetic scenes and tiny random models, for tests and `terramask doctor`."""
