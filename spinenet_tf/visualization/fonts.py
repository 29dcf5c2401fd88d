"""The font of every picture: Pillow's bundled one (Aileron), so pictures are identical across machines and need no
system fonts."""

from __future__ import annotations

from PIL import ImageFont


def font(size: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` pixels (rounded, at least 6)."""
    return ImageFont.load_default(size=max(6, round(size)))
