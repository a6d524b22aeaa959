"""Retention (issue 22): settings that refuse bad values, expiry at query time, the sweeper."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


@pytest.mark.parametrize("value", ["-1", "3650000", "thirty", "1.5"])
@pytest.mark.parametrize("variable", ["GENSERVE_RETAIN_RECORDS_DAYS", "GENSERVE_RETAIN_USAGE_DAYS"])
def test_a_bad_retention_refuses_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert variable.removeprefix("GENSERVE_").lower() in str(refused.value)


def test_the_defaults_keep_what_the_docs_promise() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.retain_records_days, settings.retain_responses_days) == (30, 30)
    assert (settings.retain_conversations_days, settings.retain_usage_days) == (90, 400)
    assert (settings.retain_feedback_days, settings.retain_tuning_days) == (0, 0)
