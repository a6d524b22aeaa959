"""Rendering: the wire bodies and stream frames of each endpoint family, built from outcomes."""
