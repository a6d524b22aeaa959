"""Command-line entry points, built on create_app."""
