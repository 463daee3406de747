"""What the encoder worker process runs: read the pictures, encode, checksum; or vet a camera's own video.

Module-level functions of plain arguments, so they pickle to the worker; no asyncio. PyAV is imported inside them:
the daemon refers to these functions but only the workers run them (and the fork server preloads the encoder).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from vmond.media.cliptypes import ClipInfo, VideoInfo


@dataclass(frozen=True)
class MadeClip:
    info: ClipInfo
    sha256: str


def encode_files(frames: list[Path], out: Path, fps: float, max_width: int, encoder: str,
                 preset: str | None = None) -> MadeClip:
    """*preset*: libx264's, None for :data:`vmond.media.video.DEFAULT_PRESET`."""
    from vmond.media.video import DEFAULT_PRESET, encode_clip

    info = encode_clip((path.read_bytes() for path in frames if path.is_file()), out, fps=fps,
                       max_width=max_width, encoder=encoder, preset=preset or DEFAULT_PRESET,
                       sync_directory=False)  # the daemon installs it with a rename and a directory fsync
    digest = hashlib.sha256()
    with open(out, "rb") as clip:
        for block in iter(lambda: clip.read(1 << 20), b""):
            digest.update(block)
    return MadeClip(info, digest.hexdigest())


def probe_file(path: Path) -> VideoInfo:
    from vmond.media.videoprobe import probe_video

    return probe_video(path)
