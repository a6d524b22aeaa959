"""Words for the keyword index: lowercased, punctuation dropped, Chinese split into words by
jieba (FTS5's and PostgreSQL's tokenizers do not split Chinese). Documents and queries go
through the same function, so their words meet."""

from __future__ import annotations

import logging
import threading
from functools import cache
from typing import Any

import re2

_WORDS = re2.compile(r"[\p{Han}]+|[\p{L}\p{N}_]+")
"""Runs of Chinese characters, or of other letters and digits (RE2: linear time)."""
_HAN = re2.compile(r"^[\p{Han}]+$")
_lock = threading.Lock()


@cache
def _jieba() -> Any:
    with _lock:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        return jieba


def words(text: str) -> list[str]:
    """The words of `text`, in order."""
    out: list[str] = []
    for run in _WORDS.findall(text.lower()):
        if _HAN.match(run):
            out.extend(w for w in _jieba().cut_for_search(run) if w.strip())
        else:
            out.append(run)
    return out


def segment(text: str) -> str:
    """`text` as space-separated words (what the keyword index stores and matches)."""
    return " ".join(words(text))
