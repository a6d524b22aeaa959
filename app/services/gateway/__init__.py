"""Gateway policies around a job: keys, access, limits, usage, cache, privacy, resilience and
safeguards. They import the generation core, never an application."""
