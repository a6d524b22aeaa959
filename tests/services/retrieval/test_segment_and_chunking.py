"""Words for the keyword index and OpenAI's static chunks: what a searcher and an uploader notice."""

from __future__ import annotations

import threading
import time

import pytest

from app.errors import InvalidRequest
from app.services.retrieval import segment as segment_module
from app.services.retrieval.chunking import _encoding, chunk_text, validate_static
from app.services.retrieval.segment import segment, words


def test_english_is_lowercased_and_punctuation_dropped() -> None:
    assert segment("Hello, World! It's GPT-4o (2024).") == "hello world it s gpt 4o 2024"


def test_chinese_without_spaces_is_split_into_words() -> None:
    out = words("我们在北京大学学习自然语言处理。")
    assert "北京" in out
    assert "自然语言" in out or "自然" in out
    assert "。" not in out
    # A query's words are the same as the document's, so they meet in the index.
    assert set(words("北京大学")) <= set(out)


def test_mixed_scripts_keep_their_order() -> None:
    assert words("GPU服务器 A100")[0] == "gpu"
    assert words("GPU服务器 A100")[-1] == "a100"


def test_blank_and_punctuation_only_give_no_words() -> None:
    assert segment("") == ""
    assert segment("  ...!!! ——？") == ""


def test_jieba_loads_once_under_concurrent_first_use() -> None:
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(segment("中文分词测试"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert len(segment_module._loaded) == 1


def test_segmenting_a_long_hostile_run_is_linear() -> None:
    started = time.perf_counter()
    segment("a" * 2_000_000 + "!" * 2_000_000)
    assert time.perf_counter() - started < 5


def test_chunks_follow_the_static_strategy() -> None:
    text = " ".join(f"word{i}" for i in range(5000))
    chunks = chunk_text(text, max_tokens=200, overlap=50)
    assert all(c.tokens <= 200 for c in chunks)
    assert chunks[0].tokens == 200
    encoding = _encoding()
    # Each chunk starts 150 tokens after the one before: its first 50 tokens are the last of that one.
    first = encoding.encode(chunks[0].text)
    second = encoding.encode(chunks[1].text)
    assert encoding.decode(first[150:]).strip()[:20] == encoding.decode(second[:50]).strip()[:20]
    # Nothing is lost: the last word is in the last chunk.
    assert chunks[-1].text.endswith("word4999")


def test_chinese_text_with_no_spaces_chunks() -> None:
    chunks = chunk_text("这是一个没有空格的中文句子。" * 2000)
    assert len(chunks) > 1
    assert all(0 < c.tokens <= 800 for c in chunks)
    assert all("中文" in c.text for c in chunks)


def test_defaults_are_openais_800_and_400() -> None:
    chunks = chunk_text("lorem ipsum " * 3000)
    assert chunks[0].tokens == 800
    assert len(chunks) == pytest.approx(6000 / 400, abs=2)


def test_blank_text_has_no_chunks() -> None:
    assert chunk_text("   \n\t ") == []


def test_repeated_text_chunks_in_bounded_time() -> None:
    started = time.perf_counter()
    chunks = chunk_text("a" * 1_000_000)
    assert time.perf_counter() - started < 5
    assert chunks
    assert all(c.tokens <= 800 for c in chunks)


@pytest.mark.parametrize(
    ("size", "overlap", "param"),
    [
        (99, 0, "chunking_strategy.static.max_chunk_size_tokens"),
        (4097, 0, "chunking_strategy.static.max_chunk_size_tokens"),
        (800, 401, "chunking_strategy.static.chunk_overlap_tokens"),
        (800, -1, "chunking_strategy.static.chunk_overlap_tokens"),
    ],
)
def test_out_of_bounds_strategies_are_400_naming_the_parameter(size: int, overlap: int, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_static(size, overlap)
    assert caught.value.param == param
    with pytest.raises(InvalidRequest):
        chunk_text("some text", max_tokens=size, overlap=overlap)


@pytest.mark.parametrize(("size", "overlap"), [(100, 0), (100, 50), (4096, 2048), (800, 400)])
def test_in_bounds_strategies_pass(size: int, overlap: int) -> None:
    validate_static(size, overlap)
