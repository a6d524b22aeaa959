"""Bias probes: suites, measures, statistics, report files and the job runner."""
