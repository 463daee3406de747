"""Bounded, reproducible property tests of ``parse_mail`` with Hypothesis.

Two sources of input: the sample camera mails, mutated the way transports and
firmware break them (byte flips, truncation, splices of two mails, stray
boundaries, encoded words and uuencode "begin" lines at line starts), and
generated MIME trees.  The properties hold for *any* input:

- ``parse_mail`` returns a ``ParsedMail`` or raises ``MailParseError``, and a
  ``MailParseError`` never wraps an exception the parser did not foresee (its
  catch-all in ``parse_mail`` would hide a bug, so ``__cause__`` must be None);
- an image is JPEG or PNG by magic, whatever the label said;
- decoding only shrinks (base64, quoted-printable and uuencode all do, and
  parts do not overlap), so the attachments together are no larger than the input;
- text that leaves the parser has no control characters, filenames no path
  separators, and the bounds on body text hold;
- parsing is a pure function of the bytes.

For generated trees that stay within the part and depth bounds and are not
mangled, the oracle is exact: every image leaf comes back, in order, byte for byte.

CI reproducibility: ``derandomize=True`` (examples from a fixed seed per test)
and ``database=None``.  Hypothesis still caches things under ``.hypothesis/``
in the working directory (constants it collects from local source files, the
Unicode table of ``st.text``), so its home is moved to a temporary directory
removed at exit, and ``st.text`` is not used.  Note that those collected
constants also seed generation, so the examples are fixed for a given set of
loaded modules (the same pytest command), not across every selection of tests.
``max_examples`` is sized for well under 20 s on a slow machine.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import io
import re
import shutil
import tempfile
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from conftest import MAIL_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from vmond.ingest import mailparse
from vmond.ingest.mailparse import MailParseError, ParsedMail, parse_mail

MAILS: list[bytes] = [p.read_bytes() for p in sorted(MAIL_DIR.glob("*.eml"))]

_HOME = tempfile.mkdtemp(prefix="vmond-hypothesis-")
set_hypothesis_home_dir(_HOME)
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)

FUZZ = settings(
    max_examples=200,
    deadline=None,  # a 350 KB sample on a loaded CI runner must not count as flaky
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def check(raw: bytes) -> ParsedMail | None:
    """Parse ``raw`` and assert every property that holds for any input."""
    try:
        parsed = parse_mail(raw)
    except MailParseError as exc:
        assert exc.__cause__ is None, f"unforeseen exception wrapped: {exc}"
        with pytest.raises(MailParseError):  # deterministic failures too
            parse_mail(raw)
        return None
    assert isinstance(parsed, ParsedMail)
    for attachment in parsed.attachments:
        magic_ok = attachment.data.startswith(JPEG_MAGIC) or attachment.data.startswith(PNG_MAGIC)
        assert attachment.is_image == magic_ok, attachment.content_type
        assert attachment.data, "empty attachments are dropped"
        name = attachment.filename
        if name is not None:
            assert name and not any(ch in name for ch in "/\\") and name.isprintable(), repr(name)
    assert sum(len(a.data) for a in parsed.attachments) <= len(raw)
    assert len(parsed.body_text) <= mailparse.MAX_BODY_TEXT
    assert not _CONTROL.search(parsed.body_text.replace("\t", "")), "control character in body_text"
    assert not _CONTROL.search(parsed.subject) and "\t" not in parsed.subject
    assert len(parsed.defects) == len(set(parsed.defects))
    assert parsed.phase in (None, "start", "stop")
    assert parse_mail(bytes(raw)) == parsed  # pure: same bytes, same result
    return parsed


# --- mutated sample mails ------------------------------------------------------------------

# Where real damage matters: the start of a header or delimiter line.
_ANCHOR = re.compile(rb"(?m)^(?:--|[A-Za-z][A-Za-z-]{0,30}:|begin )")
_BOUNDARY = re.compile(rb"boundary=\"?([^\"\s;]{1,100})", re.IGNORECASE)
_TOKENS = (
    b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"--", b"\x00", b"\xff\xfe", b":", b";", b'"', b"=", b"=\r\n",
    b"=?utf-8?B?5pE=?=", b"=?gb2312?B?uvPDxQ==?= ", b"=?x-unknown?q?=00=1b?=", b"=?utf-8?q?", b"?=",
    b"begin 644 snap.jpg\n", b"begin 644 ../x.jpg\nM_]C_X``02D9)1@`!`0``\n`\nend\n", b"begin \n",
    b"Content-Type: multipart/mixed; boundary=\"F\"\r\n\r\n--F\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: x-uuencode\r\n",
    b"Content-Type: message/rfc822\r\n\r\n", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"II*\x00",
    b"Subject: Motion Detection Stop\r\n", b"Alarm Action: Start\r\n",
)


@st.composite
def mutated_mails(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(MAILS)))
    for _ in range(draw(st.integers(0, 6))):
        anchors = [m.start() for m in _ANCHOR.finditer(data)] or [0]
        if draw(st.booleans()):  # a structural position
            pos = anchors[draw(st.integers(0, len(anchors) - 1))]
        else:
            pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "token", "boundary", "delete", "repeat"]))
        if kind == "flip" and data:
            pos = min(pos, len(data) - 1)
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "splice":  # the head of this mail, the tail of another (or itself)
            other = draw(st.sampled_from(MAILS))
            data[pos:] = other[draw(st.integers(0, len(other))) :]
        elif kind == "token":
            data[pos:pos] = draw(st.sampled_from(_TOKENS))
        elif kind == "boundary":  # this mail's own boundary, well-formed or mangled
            found = _BOUNDARY.search(data)
            boundary = found.group(1) if found else b"XYZ"
            dashes = draw(st.sampled_from([b"--", b"---", b"----", b"-"]))
            close = draw(st.sampled_from([b"", b"--", b"----", b"-", b" \t"]))
            data[pos:pos] = b"\r\n" + dashes + boundary + close + b"\r\n"
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 200))]
        elif kind == "repeat":  # a small stretch many times (header or part storm, bounded)
            chunk = bytes(data[pos : pos + draw(st.integers(1, 80))])
            data[pos:pos] = chunk * draw(st.integers(1, 300))
    return bytes(data)


@FUZZ
@given(mutated_mails())
def test_mutated_samples_keep_the_invariants(raw: bytes) -> None:
    check(raw)


# --- hostile header values ------------------------------------------------------------------

_HEADER_NAMES = [b"Content-Type", b"Content-Disposition", b"Content-Transfer-Encoding", b"Subject", b"From",
                 b"Date", b"Message-ID", b"X-Mailer"]
# Pieces of parameter syntax (RFC 2231 continuations, encoded words, quoting, folding) and raw bytes.
_HEADER_PIECES = [
    b"multipart/mixed; boundary=", b"boundary=\"\"", b"filename*0*=utf-8''%", b"filename*1*=", b'name="', b"%FF",
    b"%00", b"=?", b"?b?", b"?q?", b"?=", b"\\", b'"', b";", b"'", b"\r\n ", b"\r\n\t", b"charset=", b"utf-16",
    b"base64", b"x-uuencode", b"quoted-printable", b"message/rfc822", b"text/html", b"image/jpeg", b"--",
]
_piece = st.one_of(st.binary(max_size=40), st.sampled_from(_HEADER_PIECES))


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from(_HEADER_NAMES), st.lists(_piece, max_size=8).map(b"".join)),
             min_size=1, max_size=6),
    st.lists(st.one_of(_piece, st.sampled_from(_TOKENS)), max_size=20).map(b"".join),
    st.booleans(),
)
def test_hostile_header_values(headers: list[tuple[bytes, bytes]], body: bytes, nested: bool) -> None:
    raw = b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body
    if nested:  # the same headers on a part, where parameters decide the walk
        raw = b'Subject: x\r\nContent-Type: multipart/mixed; boundary="Q"\r\n\r\n--Q\r\n' + raw + b"\r\n--Q--\r\n"
    check(raw)


# --- generated MIME trees ------------------------------------------------------------------


def _image(kind: str, size: tuple[int, int], color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, kind)
    return out.getvalue()


IMAGES = [_image("JPEG", (16, 12), "red"), _image("PNG", (8, 8), "blue"), _image("JPEG", (40, 30), "green")]
TIFF = _image("TIFF", (4, 4), "white")
# Filename characters: path separators, NUL, controls, bidi overrides, markup, non-ASCII.
_NAME_CHARS = list("ab.-_ 09") + ["/", "\\", "..", "\x00", "\x01", "\x1b", "\x7f", "\x85", "\u202e", "\u200f",
                                   "<script>", "</script>", "\"", "'", ";", "=?", "?=", "前门", "é"]
_TEXT_CHARS = list("abcXYZ 0123:\n") + ["é", "后门", "\t", "\x00", "\x1b", "MZ", "<b>", "Start", "Stop"]


@dataclass(frozen=True)
class Leaf:
    ctype: str
    cte: str
    filename: str | None
    payload: bytes
    image: bool  # the payload is a real JPEG/PNG


@dataclass(frozen=True)
class Node:
    subtype: str  # "mixed", "related", "alternative" or "rfc822"
    children: tuple[Leaf | Node, ...]


@st.composite
def leaves(draw: st.DrawFn) -> Leaf:
    name = draw(st.one_of(st.none(), st.lists(st.sampled_from(_NAME_CHARS), max_size=12).map("".join)))
    kind = draw(st.sampled_from(["image", "image", "text", "tiff", "binary"]))
    if kind == "image":
        payload = draw(st.sampled_from(IMAGES))
        ctype = draw(st.sampled_from(["image/jpeg", "image/png", "application/octet-stream", "text/plain"]))
        cte = draw(st.sampled_from(["base64", "x-uuencode", "quoted-printable"]))
        return Leaf(ctype, cte, name, payload, True)
    if kind == "text":
        text = "".join(draw(st.lists(st.sampled_from(_TEXT_CHARS), max_size=40)))
        ctype = draw(st.sampled_from(["text/plain", "text/html"]))
        cte = draw(st.sampled_from(["8bit", "base64", "quoted-printable"]))
        return Leaf(ctype, cte, None, text.encode("utf-8"), False)
    if kind == "tiff":
        return Leaf("image/jpeg", "base64", "snapshot.jpg", TIFF, False)
    payload = draw(st.binary(max_size=64))
    magic = payload.startswith(JPEG_MAGIC) or payload.startswith(PNG_MAGIC)
    return Leaf(draw(st.sampled_from(["image/jpeg", "application/octet-stream"])), "base64", name, payload, magic)


def nodes(children: st.SearchStrategy[Leaf | Node]) -> st.SearchStrategy[Node]:
    subtypes = st.sampled_from(["mixed", "related", "alternative"])
    multi = st.builds(Node, subtypes, st.lists(children, min_size=1, max_size=4).map(tuple))
    wrapped = st.builds(Node, st.just("rfc822"), st.tuples(children))
    return st.one_of(multi, multi, wrapped)


trees = st.recursive(leaves(), nodes, max_leaves=12)


def _encode(leaf: Leaf) -> bytes:
    if leaf.cte == "base64":
        return base64.encodebytes(leaf.payload).replace(b"\n", b"\r\n")
    if leaf.cte == "quoted-printable":  # binary-safe: CR and LF encoded, soft breaks only
        return binascii.b2a_qp(leaf.payload, quotetabs=True, istext=False)
    if leaf.cte == "x-uuencode":
        lines = b"".join(binascii.b2a_uu(leaf.payload[i : i + 45]) for i in range(0, len(leaf.payload), 45))
        return b"begin 644 snap\n" + lines + b"`\nend\n"
    return leaf.payload


def render(tree: Leaf | Node, counter: list[int]) -> bytes:
    """One MIME entity (headers and body, CRLF) with boundaries unique in the whole mail."""
    if isinstance(tree, Leaf):
        head = f"Content-Type: {tree.ctype}; charset=utf-8\r\nContent-Transfer-Encoding: {tree.cte}\r\n"
        if tree.filename is not None:  # RFC 2231 carries any character, NUL and CR included
            head += f"Content-Disposition: attachment; filename*=utf-8''{quote(tree.filename, safe='')}\r\n"
        return head.encode() + b"\r\n" + _encode(tree)
    if tree.subtype == "rfc822":
        inner = render(tree.children[0], counter)
        return b"Content-Type: message/rfc822\r\n\r\nSubject: forwarded\r\nFrom: a@b\r\n" + inner
    counter[0] += 1
    # Lower case and "=" are outside the uuencode alphabet and never start a base64 line.
    boundary = b"=_b%dz" % counter[0]
    body = b"".join(b"--" + boundary + b"\r\n" + render(c, counter) + b"\r\n" for c in tree.children)
    head = b'Content-Type: multipart/%s; boundary="%s"\r\n\r\n' % (tree.subtype.encode(), boundary)
    return head + b"preamble\r\n" + body + b"--" + boundary + b"--\r\n"


def _shape(tree: Leaf | Node, depth: int = 0) -> tuple[int, int]:
    """(entities the parser will walk, deepest level of an entity)."""
    if isinstance(tree, Leaf):
        return 1, depth
    shapes = [_shape(c, depth + 1) for c in tree.children]
    return 1 + sum(n for n, _ in shapes), max(d for _, d in shapes)


def _images(tree: Leaf | Node, depth: int = 0) -> list[bytes]:
    """The images the parser must find: a container at MAX_DEPTH is skipped whole."""
    if isinstance(tree, Leaf):
        return [tree.payload] if tree.image else []
    if depth >= mailparse.MAX_DEPTH:
        return []
    return [data for child in tree.children for data in _images(child, depth + 1)]


MANGLES = ("none", "bare-lf", "no-close", "extra-dashes", "wrong-boundary", "cr-only", "truncate")


def mangle(raw: bytes, how: str) -> bytes:
    if how == "bare-lf":
        return raw.replace(b"\r\n", b"\n")
    if how == "no-close":
        return re.sub(rb"--(=_b\d+z)--\r\n", b"", raw)
    if how == "extra-dashes":
        return re.sub(rb"--(=_b\d+z)--", rb"----\1--", raw)
    if how == "wrong-boundary":
        return raw.replace(b'boundary="=_b1z"', b'boundary="nope"', 1)
    if how == "cr-only":
        return raw.replace(b"\r\n", b"\r")
    if how == "truncate":
        return raw[: len(raw) * 2 // 3]
    return raw


@FUZZ
@given(trees, st.integers(0, mailparse.MAX_DEPTH + 2), st.sampled_from(MANGLES))
def test_generated_mime_trees(tree: Leaf | Node, wrappers: int, how: str) -> None:
    for _ in range(wrappers):  # push the tree across the depth bound
        tree = Node("related", (tree,))
    raw = mangle(b"From: cam@cam.lan\r\nSubject: alarm\r\n" + render(tree, [0]), how)
    parsed = check(raw)
    assert parsed is not None  # headers are always there
    entities, depth = _shape(tree)
    if entities > mailparse.MAX_PARTS:
        return
    if how in ("none", "bare-lf"):
        assert [a.data for a in parsed.images] == _images(tree)
        # A leaf at depth MAX_DEPTH is still walked: the bound stops containers there.
        assert ("too_deep" in parsed.defects) == (depth > mailparse.MAX_DEPTH)
        assert "bad_boundary" not in parsed.defects
