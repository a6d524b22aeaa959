"""Text out of uploads, and what hostile uploads cost: each test is a file a user (or an
attacker) could send, and the answer a store's file would show (`last_error.code`)."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile

import pytest

from app.services.retrieval.extract import (
    ExtractLimits,
    InvalidFile,
    UnsupportedFile,
    extract_sync,
    extract_text,
)

LIMITS = ExtractLimits(max_chars=1_000_000, memory_bytes=1 << 30, cpu_seconds=20, wall_seconds=30)


def tiny_pdf(text: str) -> bytes:
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(width=612, height=792)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    stream = DecodedStreamObject()
    stream.set_data(f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode())
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def tiny_docx(*paragraphs: str) -> bytes:
    import docx

    document = docx.Document()
    for p in paragraphs:
        document.add_paragraph(p)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "cell one"
    table.rows[0].cells[1].text = "cell two"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


async def test_a_real_pdf_yields_its_text() -> None:
    extracted = await extract_text(
        tiny_pdf("Hello from a PDF"), "report.pdf", "application/pdf", limits=LIMITS
    )
    assert extracted.kind == "pdf"
    assert "Hello from a PDF" in extracted.text


async def test_a_real_docx_yields_paragraphs_and_tables() -> None:
    extracted = await extract_text(
        tiny_docx("First paragraph.", "第二段。"), "notes.docx", None, limits=LIMITS
    )
    assert extracted.kind == "docx"
    assert "First paragraph." in extracted.text
    assert "第二段。" in extracted.text
    assert "cell one | cell two" in extracted.text


async def test_what_a_file_is_comes_from_its_bytes_not_its_name() -> None:
    # A PDF named .txt is read as a PDF.
    assert (await extract_text(tiny_pdf("renamed"), "x.txt", "text/plain", limits=LIMITS)).kind == "pdf"
    # An executable named .pdf is refused before any parser sees it.
    with pytest.raises(UnsupportedFile) as caught:
        await extract_text(
            b"\x7fELF\x02\x01\x01" + bytes(200), "invoice.pdf", "application/pdf", limits=LIMITS
        )
    assert caught.value.code == "unsupported_file"
    # Text named .pdf is not a PDF either.
    with pytest.raises(InvalidFile):
        await extract_text(b"just words", "invoice.pdf", "application/pdf", limits=LIMITS)


async def test_a_broken_pdf_is_invalid_file() -> None:
    with pytest.raises(InvalidFile) as caught:
        await extract_text(b"%PDF-1.7\n" + b"\xff" * 500, "x.pdf", None, limits=LIMITS)
    assert caught.value.code == "invalid_file"


async def test_a_zip_that_is_not_a_docx_is_unsupported() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(UnsupportedFile):
        await extract_text(out.getvalue(), "x.docx", None, limits=LIMITS)


async def test_a_zip_bomb_is_refused_before_it_is_opened() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"\0" * (200 << 20))  # 200 MB in ~200 KB
    bomb = out.getvalue()
    assert len(bomb) < 1 << 20
    started = time.perf_counter()
    with pytest.raises(InvalidFile, match="zip bomb"):
        await extract_text(bomb, "cv.docx", None, limits=LIMITS)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("name", "content", "kind", "want", "absent"),
    [
        ("a.txt", b"plain words", "text", "plain words", None),
        ("a.md", b"# Title\n\nbody", "markdown", "# Title", None),
        (
            "page.html",
            b"<html><head><style>p{}</style><script>alert(1)</script></head><body><p>Shown</p></body></html>",
            "html",
            "Shown",
            "alert",
        ),
        ("noext", b"<!DOCTYPE html><html><body>Sniffed page</body></html>", "html", "Sniffed page", "<body>"),
        ("d.json", json.dumps({"k": "値"}).encode(), "json", "値", None),
        ("t.csv", b"name,city\nana,porto\n", "csv", "ana,porto", None),
        (
            "latin.txt",
            "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, d\u00e9j\u00e0 vu".encode("latin-1") * 20,
            "text",
            "Café",
            None,
        ),
        ("bom.txt", "\ufeffwith a bom".encode(), "text", "with a bom", "\ufeff"),
    ],
)
async def test_text_formats(name: str, content: bytes, kind: str, want: str, absent: str | None) -> None:
    extracted = await extract_text(content, name, None, limits=LIMITS)
    assert extracted.kind == kind
    assert want in extracted.text
    if absent is not None:
        assert absent not in extracted.text


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.txt", b""),
        ("blank.txt", b" \n\t "),
        ("bad.json", b"{not json"),
        ("empty.html", b"<html></html>"),
    ],
)
async def test_files_without_text_are_invalid(name: str, content: bytes) -> None:
    with pytest.raises(InvalidFile):
        await extract_text(content, name, None, limits=LIMITS)


def test_a_binary_blob_is_unsupported() -> None:
    with pytest.raises(UnsupportedFile):
        extract_sync(b"abc\x00\x01\x02" * 100, "data.txt", 1000)


async def test_100_mb_of_text_is_refused_cheaply() -> None:
    content = b"a" * (100 << 20)
    started = time.perf_counter()
    with pytest.raises(InvalidFile, match="more than"):
        await extract_text(content, "big.txt", None, limits=LIMITS)
    assert time.perf_counter() - started < 1


async def test_text_over_the_character_bound_is_invalid() -> None:
    limits = ExtractLimits(max_chars=1000, wall_seconds=30)
    with pytest.raises(InvalidFile, match="more than 1000"):
        await extract_text(b"y " * 1000, "a.txt", None, limits=limits)


async def test_a_parse_past_the_wall_timeout_is_killed_and_the_loop_keeps_running() -> None:
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beating = asyncio.create_task(heartbeat())
    try:
        slow = ExtractLimits(wall_seconds=0.001)
        with pytest.raises(InvalidFile, match="longer than"):
            await extract_text(tiny_pdf("slow"), "x.pdf", None, limits=slow)
    finally:
        beating.cancel()
    assert ticks > 0
    # The next file gets a fresh worker.
    assert (await extract_text(b"after", "a.txt", None, limits=LIMITS)).text == "after"


async def test_a_parse_beyond_its_memory_is_invalid_file() -> None:
    tight = ExtractLimits(max_chars=200_000_000, memory_bytes=64 << 20, wall_seconds=30)
    with pytest.raises(InvalidFile, match="memory"):
        await extract_text(b"word " * ((40 << 20) // 5), "big.txt", None, limits=tight)


async def test_files_are_parsed_a_bounded_number_at_a_time() -> None:
    limits = ExtractLimits(concurrency=2, wall_seconds=30)
    results = await asyncio.gather(
        *(extract_text(f"file {i}".encode(), "a.txt", None, limits=limits) for i in range(6))
    )
    assert [r.text for r in results] == [f"file {i}" for i in range(6)]
