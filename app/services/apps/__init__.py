"""What users build on the core: completions, responses, conversations, presets, summaries,
feedback and tuning, records and bias probes. Applications import the core and the gateway,
never a route."""
