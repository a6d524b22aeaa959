"""Text extraction as users' files need it: real PDF and DOCX files, HTML without its scripts,
JSON and CSV, legacy encodings; hostile files (an executable named .pdf, a zip bomb named .docx,
100 MB of one character, a parse that hangs) fail with OpenAI's codes within the limits, and
chunking and filters keep their bounds."""

from __future__ import annotations

import io
import time
import zipfile

import docx
import pytest

from app.errors import InvalidRequest
from app.services.retrieval.chunking import MAX_CHUNKS, chunk_text
from app.services.retrieval.extract import ExtractLimits, InvalidFile, UnsupportedFile, extract_text
from app.services.retrieval.filters import parse_filter
from app.services.retrieval.segment import words

LIMITS = ExtractLimits(max_chars=1_000_000, wall_seconds=20)


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF with `text`, written by hand (objects, xref and trailer)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def tiny_docx(*paragraphs: str) -> bytes:
    document = docx.Document()
    for p in paragraphs:
        document.add_paragraph(p)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


async def test_documents_of_every_kind_give_their_text() -> None:
    pdf = await extract_text(
        tiny_pdf("Returns within 30 days"), "policy.pdf", "application/pdf", limits=LIMITS
    )
    assert "Returns within 30 days" in pdf.text
    assert pdf.kind == "pdf"
    word = await extract_text(tiny_docx("Warranty: two years.", "保修两年。"), "w.docx", None, limits=LIMITS)
    assert word.text.splitlines() == ["Warranty: two years.", "保修两年。"]
    html = await extract_text(
        b"<html><head><style>p{}</style></head><body><p>Hello</p><script>alert(1)</script></body></html>",
        "page.html",
        "text/html",
        limits=LIMITS,
    )
    assert html.text == "Hello"
    gbk = await extract_text(
        "退货须在三十天内办理，请保留收据。".encode("gbk"), "zh.txt", None, limits=LIMITS
    )
    assert "三十天" in gbk.text
    csv = await extract_text(b"sku,price\nA1,9.99\n", "prices.csv", None, limits=LIMITS)
    assert csv.kind == "csv"


async def test_hostile_files_fail_with_a_reason() -> None:
    with pytest.raises(UnsupportedFile):
        await extract_text(
            b"\x7fELF\x02\x01\x01" + b"\x00" * 64, "report.pdf", "application/pdf", limits=LIMITS
        )
    with pytest.raises(InvalidFile):
        await extract_text(b"plain words", "report.pdf", None, limits=LIMITS)  # named .pdf, is not one
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<" + b"a" * 50_000_000 + b">")
    with pytest.raises(InvalidFile, match="zip bomb"):
        await extract_text(bomb.getvalue(), "cv.docx", None, limits=LIMITS)
    with pytest.raises(InvalidFile):
        await extract_text(b"", "empty.txt", None, limits=LIMITS)
    with pytest.raises(InvalidFile):
        await extract_text(b"{broken", "data.json", None, limits=LIMITS)


async def test_a_huge_file_of_one_character_is_refused_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(InvalidFile, match="more than"):
        await extract_text(b"a" * 100_000_000, "a.txt", None, limits=LIMITS)
    assert time.monotonic() - started < 30


async def test_parsing_that_takes_too_long_is_killed() -> None:
    slow = ExtractLimits(max_chars=200_000_000, wall_seconds=0.05)
    with pytest.raises(InvalidFile, match="longer than"):
        await extract_text(b"word " * 5_000_000, "big.txt", None, limits=slow)


def test_chunks_follow_the_static_strategy_and_their_bound() -> None:
    chunks = chunk_text("退货须在三十天内办理。" * 400, max_tokens=100, overlap=50)
    assert all(c.tokens <= 100 for c in chunks)
    assert len(chunks) > 10
    assert chunk_text("   ") == []
    assert len(chunk_text("a " * 3_000_000, max_tokens=100, overlap=0)) == MAX_CHUNKS


def test_words_split_chinese_and_drop_punctuation() -> None:
    assert words("退货政策！Returns, 30-day") == ["退货", "政策", "returns", "30", "day"]


def test_filters_have_bounds() -> None:
    many = {"type": "or", "filters": [{"type": "eq", "key": "k", "value": i} for i in range(500)]}
    with pytest.raises(InvalidRequest, match="at most 200"):
        parse_filter(many)
    with pytest.raises(InvalidRequest) as caught:
        parse_filter({"type": "eq", "key": "k", "value": {"nested": 1}})
    assert caught.value.param == "filters.value"
