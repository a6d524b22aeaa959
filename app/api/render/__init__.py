"""Rendering: the wire bodies (JSON and stream frames) built from the services' results, one
module per API family. Routes parse, call a service, and hand its result to a function here."""
