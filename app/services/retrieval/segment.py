"""Words for the keyword index: lowercased, punctuation dropped, Chinese split into words by
jieba (FTS5's and PostgreSQL's tokenizers do not split Chinese). Documents and queries go
through the same function, so their words meet."""

from __future__ import annotations

import logging
import threading
from typing import Any

import re2

_WORDS = re2.compile(r"\p{Han}+|(?:[^\p{Han}\p{P}\p{S}\p{Z}\p{C}\s]|_)+")
"""Runs of Chinese characters, or of other letters, marks and digits (Han are letters too, so
they are left out of the second kind: "GPU服务器" is "gpu" then Chinese). RE2: linear time."""
_HAN = re2.compile(r"^[\p{Han}]+$")
_lock = threading.Lock()
_loaded: list[Any] = []
"""jieba once loaded (its dictionary takes ~1 s and 50 MB: only when Chinese text first comes)."""


def _jieba() -> Any:
    if _loaded:
        return _loaded[0]
    with _lock:  # one thread loads the dictionary; the others wait for it, not load it again
        if not _loaded:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _loaded.append(jieba)
    return _loaded[0]


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
