"""``decode_uu`` on the lines around its fast path: runs of full lines ("M" and 60 characters) are decoded at once,
every other line one by one; whatever the mix, the result is what decoding line by line gives."""

from __future__ import annotations

import binascii

import pytest

from vmond.ingest.uudecode import decode_uu, split_uu_blocks

DATA = bytes(range(256)) * 3 + b"tail"  # 772 bytes: 17 full lines and a short one


def uu_lines(data: bytes, backtick: bool = False) -> list[bytes]:
    return [binascii.b2a_uu(data[i : i + 45], backtick=backtick).rstrip(b"\n") for i in range(0, len(data), 45)]


def uu_file(lines: list[bytes], eol: bytes = b"\n") -> bytes:
    return eol.join([b"begin 644 snap.jpg", *lines, b"`", b"end", b""])


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r\r\n"], ids=["lf", "crlf", "two-crs"])
@pytest.mark.parametrize("backtick", [False, True], ids=["space-zeros", "backtick-zeros"])
def test_whole_files_decode_exactly(eol: bytes, backtick: bool) -> None:
    assert decode_uu(uu_file(uu_lines(DATA, backtick), eol)) == (DATA, 0)


def test_line_ends_may_change_within_a_run() -> None:
    lines = uu_lines(DATA)
    body = b"begin 644 x\n" + b"".join(line + (b"\r\n" if i % 3 else b"\n") for i, line in enumerate(lines))
    assert decode_uu(body + b"end\n") == (DATA, 0)


def test_a_broken_full_line_costs_only_its_own_bytes() -> None:
    lines = uu_lines(DATA)
    lines[4] = lines[4][:30] + b"a" + lines[4][31:]  # lower case is outside the uu alphabet
    lines[7] = lines[7] + b"junk"  # characters past the declared length
    data, bad = decode_uu(uu_file(lines, b"\r\n"))
    assert bad == 2 and len(data) == len(DATA)
    assert data[: 4 * 45] == DATA[: 4 * 45] and data[5 * 45 : 7 * 45] == DATA[5 * 45 : 7 * 45]
    assert data[8 * 45 :] == DATA[8 * 45 :]


def test_padding_after_a_full_line_is_no_defect() -> None:
    lines = uu_lines(DATA)
    lines[2] += b"  "
    lines[3] += b"`"
    assert decode_uu(uu_file(lines)) == (DATA, 0)


def test_a_full_line_with_its_last_blanks_stripped_is_padded() -> None:
    data = DATA[:90]
    lines = uu_lines(data)
    zeros = binascii.b2a_uu(b"\0" * 45).rstrip(b"\n")  # "M" and sixty blanks
    stripped = [lines[0], zeros.rstrip(b" "), lines[1]]  # what a transport that trims blanks leaves
    assert decode_uu(uu_file(stripped)) == (data[:45] + b"\0" * 45 + data[45:], 0)


def test_lines_after_end_and_before_begin_are_not_payload() -> None:
    lines = uu_lines(DATA)
    body = b"Motion on channel 4\n" + uu_file(lines) + b"\n".join(lines) + b"\n"
    assert decode_uu(body) == (DATA, 0)


def test_without_begin_everything_is_payload_up_to_end() -> None:
    lines = uu_lines(DATA)
    assert decode_uu(b"\n".join(lines)) == (DATA, 0)  # the last line without a line end
    assert decode_uu(b"\n".join(lines[:3])) == (DATA[:135], 0)  # full lines only, the last without a line end


def test_blocks_in_a_text_are_found_after_prose_and_after_each_other() -> None:
    first, second = DATA[:100], DATA[100:400]
    text = (b"begin the patrol\nMotion\n" + uu_file(uu_lines(first)) + b"and then\n"
            + uu_file(uu_lines(second), b"\r\n") + b"end of mail\n")
    kept, blocks = split_uu_blocks(text)
    assert [block.data for block in blocks] == [first, second]
    assert kept == b"begin the patrol\nMotion\n\nand then\n\nend of mail\n"
