"""Image thumbnails with Pillow: real CPU work on real files, the default of ``make run``.

The request is an image in any format Pillow reads; the result is a PNG at most
``THUMBNAIL_SIZE`` pixels on its longer side, with the image's orientation applied.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

THUMBNAIL_SIZE = (256, 256)
# Decompression bombs: refuse images that would expand past this many pixels.
MAX_PIXELS = 100_000_000


class ThumbnailProcessor:
    def process(self, data: bytes) -> bytes:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            with Image.open(io.BytesIO(data)) as opened:
                image: Image.Image = ImageOps.exif_transpose(opened)
                if image.mode not in ("RGB", "RGBA", "L", "LA"):
                    image = image.convert("RGBA")
                image.thumbnail(THUMBNAIL_SIZE, Image.Resampling.LANCZOS)
                out = io.BytesIO()
                image.save(out, format="PNG", optimize=True)
                return out.getvalue()
        except UnidentifiedImageError:
            raise ValueError(
                "the request is not an image that Pillow can read"
            ) from None
