"""The job hook that reports generations to observability: metrics, and the job's facts on the
request's access-log line."""

from __future__ import annotations

from app.errors import AuthenticationFailed, PermissionDenied, RateLimited
from app.observability.metrics import Metrics
from app.observability.requests import RequestRecord, current_request, error_code
from app.services.gateway.limits import LimitReached
from app.services.generation.pipeline import Job, JobHook, Outcome


class ObservabilityHook(JobHook):
    """Feeds generation metrics and adds the job's facts to the request's log line."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def on_start(self, job: Job) -> None:
        record = current_request()
        if record is not None:
            record.fields.update(
                endpoint=job.endpoint, model=job.model, provider=job.provider.name, generation_id=job.id
            )
            # Counts and flags only: tool names and arguments are the request's text.
            if job.request.tools:
                record.fields["tools"] = len(job.request.tools)
            if job.request.logprobs is not None:
                record.fields["logprobs"] = job.request.logprobs

    async def on_finish(self, outcome: Outcome) -> None:
        job, usage = outcome.job, outcome.completion.usage
        self.metrics.observe_generation(
            job.endpoint,
            job.provider.name,
            job.model,
            seconds=outcome.total_ms / 1000,
            ttft_seconds=outcome.ttft_ms / 1000,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            aborted=outcome.aborted,
        )
        calls = sum(len(c.tool_calls) for c in outcome.completion.choices)
        if calls:
            self.metrics.tool_calls.labels(job.model).inc(calls)
        record = current_request()
        if record is not None:
            record.fields.update(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                ttft_ms=round(outcome.ttft_ms, 2),
                upstream_ms=round(outcome.total_ms, 2),
            )
            if outcome.aborted:
                record.fields["aborted"] = True
            if calls:
                record.fields["tool_calls"] = calls
            _job_facts(record, job)

    async def on_error(self, job: Job, exc: BaseException) -> None:
        code = error_code(exc)
        record = current_request()
        if record is not None:
            record.fields["error"] = code
            _job_facts(record, job)
        if _is_refusal(exc):
            # Refused by this service's own policy (keys, limits, quotas): not an upstream error.
            if isinstance(exc, LimitReached):
                self.metrics.rate_limited(exc.limit)
            self.metrics.generations.labels(job.endpoint, job.provider.name, job.model, "refused").inc()
            return
        self.metrics.observe_failure(job.endpoint, job.provider.name, job.model, code)


#: Facts the safeguards leave in a job's metadata that belong on its log line.
_JOB_FACTS = ("retries", "served_by", "fallback_from")


def _job_facts(record: RequestRecord, job: Job) -> None:
    for name in _JOB_FACTS:
        value = job.metadata.get(name)
        if value is not None:
            record.fields[name] = value


def _is_refusal(exc: BaseException) -> bool:
    if isinstance(exc, RateLimited):
        return not (exc.code or "").startswith("upstream_")
    return isinstance(exc, AuthenticationFailed | PermissionDenied)
