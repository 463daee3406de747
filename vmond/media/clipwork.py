"""What the encoder worker process runs: read the pictures, encode, checksum; or vet a camera's own video.

Module-level functions of plain arguments, so they pickle to the worker; no asyncio.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from vmond.media.video import ClipInfo, VideoInfo, encode_clip, probe_video


@dataclass(frozen=True)
class MadeClip:
    info: ClipInfo
    sha256: str


def encode_files(frames: list[Path], out: Path, fps: float, max_width: int, encoder: str) -> MadeClip:
    info = encode_clip((path.read_bytes() for path in frames if path.is_file()), out, fps=fps,
                       max_width=max_width, encoder=encoder)
    digest = hashlib.sha256()
    with open(out, "rb") as clip:
        for block in iter(lambda: clip.read(1 << 20), b""):
            digest.update(block)
    return MadeClip(info, digest.hexdigest())


def probe_file(path: Path) -> VideoInfo:
    return probe_video(path)
