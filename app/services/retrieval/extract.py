"""Text out of an uploaded file: plain text, Markdown, HTML, PDF, DOCX, JSON and CSV.

What a file is comes from its bytes (a "PDF" that is an executable is refused), never from its
name alone. Parsing runs in a child process of its own with limits on memory (RLIMIT_AS), CPU
time and wall time, so a hostile file (a zip bomb, a PDF that loops) costs at most those limits
and the service keeps answering while it is parsed; children run `concurrency` at a time per
event loop (a bounded pool of one-shot workers: a hung one is killed at the wall timeout and the
next file gets a fresh process, so no state survives a hostile file).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import weakref
import zipfile
from dataclasses import dataclass

MAX_ZIP_RATIO = 100
"""A DOCX whose parts expand more than this many times their compressed size is a zip bomb."""


class ExtractionError(Exception):
    """A file genserve cannot index; `code` is OpenAI's `last_error.code`."""

    code = "invalid_file"


class UnsupportedFile(ExtractionError):
    code = "unsupported_file"


class InvalidFile(ExtractionError):
    code = "invalid_file"


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    max_chars: int = 5_000_000
    """Most characters of text one file may yield."""
    memory_bytes: int = 1 << 30
    cpu_seconds: int = 60
    wall_seconds: float = 120.0
    concurrency: int = 1


@dataclass(frozen=True, slots=True)
class Extracted:
    text: str
    kind: str


TEXT_SUFFIXES = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "csv",
    ".json": "json",
    ".html": "html",
    ".htm": "html",
    ".text": "text",
    ".tsv": "csv",
    ".jsonl": "json",
}


def too_long(content: bytes, kind: str, max_chars: int) -> bool:
    """Whether a text file surely decodes to more than `max_chars` characters (UTF-8 takes at
    most 4 bytes a character), so 100 MB of text is refused without decoding it."""
    return kind not in ("pdf", "docx") and len(content) > 4 * max_chars


def sniff(content: bytes, filename: str) -> str:
    """The kind of `content`: pdf, docx, html, json, csv, markdown or text; UnsupportedFile otherwise."""
    if not content:
        raise InvalidFile("The file is empty.")
    suffix = os.path.splitext(filename.lower())[1]
    if content.startswith(b"%PDF-"):
        return "pdf"
    if content.startswith(b"PK\x03\x04"):
        return "docx"  # checked to be one when opened
    if (
        content.startswith((b"\x7fELF", b"MZ", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe"))
        or b"\x00" in content[:8192]
    ):
        raise UnsupportedFile("The file is not a text, PDF or DOCX document.")
    if suffix in (".pdf", ".docx"):
        raise InvalidFile(f"The file is named {suffix} but is not one.")
    kind = TEXT_SUFFIXES.get(suffix)
    if kind is None:
        head = content[:512].lstrip().lower()
        kind = "html" if head.startswith((b"<!doctype html", b"<html")) else "text"
    return kind


def _decode(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(content[: 1 << 20]).best()
        if best is None:
            raise InvalidFile("The file's text encoding could not be recognised.") from None
        return content.decode(best.encoding, errors="replace")


def _pdf(content: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise InvalidFile("The PDF could not be read.") from exc


def _docx(content: bytes, max_chars: int) -> str:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
        infos = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise InvalidFile("The file is not a valid DOCX (zip) document.") from exc
    names = {i.filename for i in infos}
    if "word/document.xml" not in names:
        raise UnsupportedFile("The archive is not a DOCX document.")
    expanded = sum(i.file_size for i in infos)
    packed = max(1, sum(i.compress_size for i in infos))
    if expanded > 50 * max_chars or expanded / packed > MAX_ZIP_RATIO:
        raise InvalidFile("The DOCX expands far beyond its size (a zip bomb).")
    import docx

    try:
        document = docx.Document(io.BytesIO(content))
    except Exception as exc:
        raise InvalidFile("The DOCX could not be read.") from exc
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(parts)


def _html(text: str) -> str:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(text)
    for node in tree.css("script, style, noscript, template"):
        node.decompose()
    body = tree.body or tree.root
    return body.text(separator="\n", strip=True) if body is not None else ""


def extract_sync(content: bytes, filename: str, max_chars: int) -> Extracted:
    """Parse in this process (the child's work; tests call it directly)."""
    kind = sniff(content, filename)
    if too_long(content, kind, max_chars):
        raise InvalidFile(f"The file holds more than {max_chars} characters of text.")
    if kind == "pdf":
        text = _pdf(content)
    elif kind == "docx":
        text = _docx(content, max_chars)
    else:
        text = _decode(content)
        if kind == "html":
            text = _html(text)
        elif kind == "json":
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise InvalidFile("The file is not valid JSON.") from exc
            if "\\u" in text:  # "\\u00e9" in the file is searched as "é", the character it stands for
                text = json.dumps(parsed, ensure_ascii=False, indent=1)
    if len(text) > max_chars:
        raise InvalidFile(f"The file holds more than {max_chars} characters of text.")
    if not text.strip():
        raise InvalidFile("The file holds no text.")
    return Extracted(text, kind)


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)
"""Per event loop (a semaphore belongs to one loop; an app served from another thread has its
own), per concurrency setting."""


def _slot(concurrency: int) -> asyncio.Semaphore:
    per_loop = _slots.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(concurrency, asyncio.Semaphore(concurrency))


def _limit_self(memory: int, cpu: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))


async def extract_text(
    content: bytes, filename: str, content_type: str | None, *, limits: ExtractLimits
) -> Extracted:
    """The text of `content`, parsed in a limited child process. `content_type` is the
    uploader's claim and is not used to decide anything."""
    del content_type
    # Refuse the obvious without a child.
    if too_long(content, sniff(content, filename), limits.max_chars):
        raise InvalidFile(f"The file holds more than {limits.max_chars} characters of text.")
    async with _slot(limits.concurrency):
        # The child limits itself before it reads a byte (a preexec_fn is unsafe in a process
        # with threads, which the server is).
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.services.retrieval.extract",
            filename,
            str(limits.max_chars),
            str(limits.memory_bytes),
            str(limits.cpu_seconds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(child.communicate(content), timeout=limits.wall_seconds)
        except TimeoutError:
            child.kill()
            await child.wait()
            raise InvalidFile(f"Parsing the file took longer than {limits.wall_seconds:g} seconds.") from None
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    if child.returncode != 0 or not out:
        raise InvalidFile("The file could not be parsed within the memory and time limits.")
    result = json.loads(out)
    if "error" in result:
        error = UnsupportedFile if result["error"] == "unsupported_file" else InvalidFile
        raise error(result["message"])
    return Extracted(result["text"], result["kind"])


def _main() -> None:
    filename, max_chars = sys.argv[1], int(sys.argv[2])
    _limit_self(int(sys.argv[3]), int(sys.argv[4]))
    content = sys.stdin.buffer.read()
    try:
        extracted = extract_sync(content, filename, max_chars)
        body = {"text": extracted.text, "kind": extracted.kind}
    except ExtractionError as exc:
        body = {"error": exc.code, "message": str(exc)}
    except MemoryError:
        body = {"error": "invalid_file", "message": "The file needs more memory to parse than allowed."}
    sys.stdout.write(json.dumps(body))


if __name__ == "__main__":
    _main()
