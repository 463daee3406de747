"""Delimiter lines of multipart bodies: where ``split_multipart`` cuts, and which cuts it calls a defect.

The scan looks for a line feed followed by a delimiter, and matches the first line on its own; these cases
pin what a multi-line ``^--boundary`` finds at the edges of that: the first and the last line, two
delimiters in a row, near misses on the same or the next line, padding, dashes and line ends.
"""

from __future__ import annotations

import re

import pytest
from mailmaker import base64_lines, jpeg

from vmond.ingest.mailparse import parse_mail
from vmond.ingest.mimesplit import split_multipart
from vmond.ingest.mimetext import search_lines


@pytest.mark.parametrize("pattern", [rb"--B(--)?(?=\r?\n|\Z)", rb"(-+)B(?=\n|\Z)", rb"x*(?=\n)"])
def test_search_lines_finds_what_a_multi_line_caret_finds(pattern: bytes) -> None:
    data = b"--B\n--B\n\n--B--\nx--B\n---B\r\n--B\r\n\nxx\n--B"
    reference = re.compile(b"(?m)^" + pattern)
    for pos in range(len(data) + 1):
        expected = [(m.start(), m.span(), m.groups()) for m in reference.finditer(data, pos)]
        assert [(start, (start, m.end()), m.groups()) for start, m in search_lines(pattern, data, pos)] == expected


def split(body: bytes, boundary: bytes = b"B") -> tuple[list[bytes] | None, bool]:
    """The parts of ``body``, or None when it has no delimiter, and whether ``bad_boundary`` was noted."""
    defects: list[str] = []
    parts = split_multipart(body, boundary, defects)
    found = None if parts is None else list(parts)
    assert set(defects) <= {"bad_boundary"}
    return found, "bad_boundary" in defects


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        pytest.param(b"--B\r\nA\r\n--B--\r\n", [b"A"], id="delimiter-on-the-first-line"),
        pytest.param(b"preamble --B\r\n--B\r\nA\r\n--B--\r\n", [b"A"], id="after-a-preamble"),
        pytest.param(b"\r\n\r\n--B\r\nA\r\n--B--\r\n", [b"A"], id="after-blank-lines"),
        pytest.param(b"--B\r\nA\r\n--B--", [b"A"], id="close-without-a-line-end"),
        pytest.param(b"--B\r\n--B\r\nA\r\n--B\r\n--B--\r\n", [b"", b"A", b""], id="delimiters-in-a-row"),
        pytest.param(b"--B \t\r\nA\r\n--B\t\r\nC\r\n--B-- \t\r\n", [b"A", b"C"], id="transport-padding"),
        pytest.param(b"--B\nA\n--B\nC\n--B--\n", [b"A", b"C"], id="lf-line-ends"),
        pytest.param(b"--B\r\nA\n--B\nC\r\n--B--\r\n", [b"A", b"C"], id="mixed-line-ends"),
        pytest.param(b"--B\r\nA\r\n\r\n--B--\r\n", [b"A\r\n"], id="only-the-last-line-end-is-the-delimiter's"),
        pytest.param(b"--B\r\n--BX\r\nx --B\r\n--B x\r\n--B--x\r\n- --B\r\n--B--\r\n",
                     [b"--BX\r\nx --B\r\n--B x\r\n--B--x\r\n- --B"], id="near-misses-are-content"),
        pytest.param(b"--B\r\n-- \r\n--\r\n--B--\r\n", [b"-- \r\n--"], id="dash-lines-before-a-delimiter"),
        pytest.param(b"--B\r\nA\r\n--B--\r\n--B\r\nepilogue\r\n--B--\r\n", [b"A"], id="epilogue-is-ignored"),
    ],
)
def test_well_formed_delimiters(body: bytes, parts: list[bytes]) -> None:
    assert split(body) == (parts, False)


@pytest.mark.parametrize(
    ("body", "boundary", "parts"),
    [
        pytest.param(b"--B\r\nA\r\n----B--\r\n", b"B", [b"A"], id="mangled-close"),
        pytest.param(b"---B\r\nA\r\n--B--\r\n", b"B", [b"A"], id="extra-dash-before"),
        pytest.param(b"--B-\r\nA\r\n--B--\r\n", b"B", [b"A"], id="one-dash-after"),
        pytest.param(b"--B\r\nA\r\n--B---\r\n", b"B", [b"A"], id="three-dashes-close"),
        pytest.param(b"---=_P\r\nA\r\n----=_P--\r\n", b"--=_P", [b"A"], id="a-dash-missing-before-a-dashed-boundary"),
        pytest.param(b"--B\r\nA\r\n", b"B", [b"A\r\n"], id="no-close-delimiter"),
        pytest.param(b"--B\r\nA\r\n--B\r\n", b"B", [b"A"], id="no-close-after-a-delimiter"),
    ],
)
def test_tolerated_delimiters_are_defects(body: bytes, boundary: bytes, parts: list[bytes]) -> None:
    assert split(body, boundary) == (parts, True)


def test_dashes_of_a_boundary_are_its_own() -> None:
    # "--=_P" is the boundary, so "----=_P" opens a part and "----=_P--" closes it.
    assert split(b"----=_P\r\nA\r\n----=_P--\r\n", b"--=_P") == ([b"A"], False)
    # A boundary of dashes only matches exactly: no dash is extra or missing there.
    assert split(b"----\r\nA\r\n-----\r\n---\r\n------\r\n", b"--") == ([b"A\r\n-----\r\n---"], False)
    assert split(b"----\r\nA\r\n", b"--") == ([b"A\r\n"], True)


def test_wrong_boundary_is_guessed_from_a_delimiter_before_a_header() -> None:
    first_line = b"--REAL\r\nContent-Type: text/plain\r\n\r\nA\r\n--REAL--\r\n"
    assert split(first_line, b"WRONG") == ([b"Content-Type: text/plain\r\n\r\nA"], True)
    # A delimiter-like line that no header follows is not taken for the boundary.
    later = b"--NOPE\r\ntext\r\n" + first_line
    assert split(later, b"WRONG") == ([b"Content-Type: text/plain\r\n\r\nA"], True)
    assert split(b"--NOPE\r\ntext\r\n", b"WRONG") == (None, False)
    assert split(first_line, b"") == ([b"Content-Type: text/plain\r\n\r\nA"], True)


def camera_mail(boundary: str, pictures: list[bytes]) -> bytes:
    """A mail shaped like bench/ingest.py's: a text part and base64 JPEGs in 76-column CRLF lines."""
    head = (f'From: cam@cam.lan\r\nSubject: Motion\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nEVENT TYPE: Motion Detection\r\n\r\n").encode()
    parts = [f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n".encode()
             + base64_lines(picture) for picture in pictures]
    return head + b"".join(parts) + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"], ids=["crlf", "lf", "cr"])
def test_every_picture_of_a_camera_mail_comes_out_whole_whatever_its_line_ends(eol: bytes) -> None:
    pictures = [jpeg((64, 48), color) for color in ("red", "green", "blue")]
    raw = camera_mail("----=_Part_0_1234.5678", pictures).replace(b"\r\n", eol)
    parsed = parse_mail(raw)
    assert [image.data for image in parsed.images] == pictures
    assert parsed.body_text == "EVENT TYPE: Motion Detection"
    assert "bad_boundary" not in parsed.defects
