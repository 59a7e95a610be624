"""One image file opened safely: its size checked before its pixels are decoded, then converted to RGB as timm does.

Both data paths read images through here, so a decompression bomb, a file posing as an image or damaged pixel data
is the same one-line error naming the file wherever it is met.
"""
from __future__ import annotations

import warnings
from typing import BinaryIO, Union

from PIL import Image, UnidentifiedImageError

from archfamily.errors import UserError

MAX_IMAGE_PIXELS = 50_000_000  # pixels of one image (an 8000x6000 photo); above it, a decompression bomb


def open_image(f: Union[str, BinaryIO], name: str) -> Image.Image:
    """An image, its size checked before its pixels are decoded (a decompression bomb is refused unread)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(f)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{name}: an image of over {MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{name}: not an image Pillow can read ({str(exc).splitlines()[0][:100] or 'empty'})") from None
    if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
        raise UserError(f"{name}: an image of {img.size[0]}x{img.size[1]} pixels; archfamily reads images of up to "
                        f"{MAX_IMAGE_PIXELS:,} pixels")
    return img


def read_rgb(f: Union[str, BinaryIO], name: str) -> Image.Image:
    """The image's pixels, decoded and converted to RGB (grey, palette and alpha images alike, as timm converts)."""
    with open_image(f, name) as img:
        try:
            return img.convert("RGB")
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or damaged pixel data
            raise UserError(f"{name}: cannot decode this image ({str(exc).splitlines()[0][:100]})") from None
