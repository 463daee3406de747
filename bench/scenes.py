"""Generated camera snapshots for the benchmarks: JPEGs that compress like a camera's."""

from __future__ import annotations

import io
import random


def camera_jpegs(count: int, width: int, height: int, seed: int = 1, quality: int = 85) -> list[bytes]:
    """A burst: a static scene with texture, sensor noise that differs in every frame (so the frames do not
    compress away), a moving object and a timestamp overlay; 4:2:0 like most cameras."""
    from PIL import Image, ImageDraw, ImageFilter  # imported here: the benchmarks' other work runs without it

    rnd = random.Random(seed)
    gradients = [Image.linear_gradient("L").rotate(angle).resize((width, height)) for angle in (0, 90, 45)]
    scene = Image.merge("RGB", gradients)
    draw = ImageDraw.Draw(scene)
    for _ in range(30):
        x, y = rnd.randrange(width), rnd.randrange(height)
        corner = (x + rnd.randrange(20, width // 4), y + rnd.randrange(20, height // 4))
        draw.rectangle([(x, y), corner], fill=tuple(rnd.randrange(256) for _ in range(3)))
    scene = scene.filter(ImageFilter.GaussianBlur(2))
    scene = Image.blend(scene, Image.effect_noise((width, height), 24).convert("RGB"), 0.2)  # texture
    out = []
    for index in range(count):
        image = Image.blend(scene, Image.effect_noise((width, height), 16).convert("RGB"), 0.08)  # sensor noise
        draw = ImageDraw.Draw(image)
        x = int(width * (0.2 + 0.05 * index))
        draw.ellipse([(x, height // 3), (x + width // 10, height // 3 + height // 4)], fill=(200, 180, 160))
        draw.text((20, 20), f"CAM-{seed:02d}  2024-05-01 12:00:{index:02d}", fill=(255, 255, 255))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        out.append(buffer.getvalue())
    return out
