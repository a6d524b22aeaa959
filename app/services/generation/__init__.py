"""The generation core: the job, its outcome, the hooks and runners around it, the request context
and the caller. It imports no gateway policy and no application."""
