"""Processor of Robust-U1 / BAGEL: the Qwen2 tokenizer and BAGEL's two image transforms.

Images follow the library's one image-input rule, stated in `robust_u1.image_utils` (PIL modes with
alpha composited on white as BAGEL's ``pil_img2rgb`` does, 16-bit rescaled, numpy HWC, torch CHW,
floats finite and in [0, 1], EXIF orientation applied, paths opened); `to_rgb_image` is that rule.

Every size is processed: the resize rule scales the image so its long side is at most ``max_size``
and its short side at least ``min_size`` (long side wins), sides rounded to the stride. Extreme aspect
ratios therefore keep one side at the stride (e.g. 15×900 → 16×1024 for the VAE).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor

from .image_utils import ImageInput, to_rgb_image


def resized_size(width: int, height: int, max_size: int, min_size: int, stride: int, max_pixels: int) -> tuple[int, int]:
    """BAGEL's ``MaxLongEdgeMinShortEdgeResize`` target (width, height)."""

    def apply(w, h, s):
        return tuple(max(stride, int(round(round(v * s) / stride) * stride)) for v in (w, h))

    scale = max(min(max_size / max(width, height), 1.0), min_size / min(width, height))
    new_w, new_h = apply(width, height, scale)
    if new_w * new_h > max_pixels:
        new_w, new_h = apply(new_w, new_h, max_pixels / (new_w * new_h))
    if max(new_w, new_h) > max_size:
        new_w, new_h = apply(new_w, new_h, max_size / max(new_w, new_h))
    return new_w, new_h


class RobustU1ImageProcessor(BaseImageProcessor):
    """BAGEL's VAE and ViT image transforms.

    VAE side: long ≤ ``vae_max_size`` (1024), short ≥ ``vae_min_size`` (512), multiples of
    ``vae_stride`` (16); ViT side: long ≤ 980, short ≥ 224, multiples of 14; both normalised with
    mean = std = 0.5 to [-1, 1], bicubic antialiased resizes.

    Example:

    ```python
    >>> processor = RobustU1ImageProcessor()
    >>> vae, vit = processor.edit_pixel_values([Image.new("RGB", (640, 480))])
    >>> vae[0].shape, vit[0].shape
    (torch.Size([3, 512, 688]), torch.Size([3, 504, 686]))
    ```
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        vae_max_size: int = 1024,
        vae_min_size: int = 512,
        vae_stride: int = 16,
        vae_max_pixels: int = 2048 * 2048,
        vit_max_size: int = 980,
        vit_min_size: int = 224,
        vit_stride: int = 14,
        vit_max_pixels: int = 14 * 14 * 9 * 1024,
        image_mean: float = 0.5,
        image_std: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vae_max_size, self.vae_min_size, self.vae_stride, self.vae_max_pixels = vae_max_size, vae_min_size, vae_stride, vae_max_pixels
        self.vit_max_size, self.vit_min_size, self.vit_stride, self.vit_max_pixels = vit_max_size, vit_min_size, vit_stride, vit_max_pixels
        self.image_mean, self.image_std = image_mean, image_std

    def resize(self, image: Image.Image, kind: str) -> Image.Image:
        """Resizes an RGB image with the ``vae`` or ``vit`` rule."""
        bounds = {
            "vae": (self.vae_max_size, self.vae_min_size, self.vae_stride, self.vae_max_pixels),
            "vit": (self.vit_max_size, self.vit_min_size, self.vit_stride, self.vit_max_pixels),
        }[kind]
        width, height = resized_size(image.width, image.height, *bounds)
        return TF.resize(image, [height, width], InterpolationMode.BICUBIC, antialias=True)

    def normalize_image(self, image: Image.Image) -> torch.Tensor:
        return (TF.to_tensor(image) - self.image_mean) / self.image_std

    def vae_pixel_values(self, image: ImageInput) -> torch.Tensor:
        return self.normalize_image(self.resize(to_rgb_image(image), "vae"))

    def vit_pixel_values(self, image: ImageInput) -> torch.Tensor:
        return self.normalize_image(self.resize(to_rgb_image(image), "vit"))

    def edit_pixel_values(self, images: Sequence[ImageInput]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """VAE and ViT pixels of images to edit: the official inference first applies the VAE resize
        and then both transforms to that resized image, so the ViT input depends on both rules."""
        vae, vit = [], []
        for image in images:
            resized = self.resize(to_rgb_image(image), "vae")
            vae.append(self.normalize_image(resized))
            vit.append(self.normalize_image(self.resize(resized, "vit")))
        return vae, vit

    def preprocess(self, images, **kwargs) -> BatchFeature:
        """ViT pixel values of images (understanding input), as a list since sizes differ."""
        images = images if isinstance(images, (list, tuple)) else [images]
        return BatchFeature({"pixel_values": [self.vit_pixel_values(image) for image in images]})


class RobustU1Processor(ProcessorMixin):
    """Tokenizer + image transforms of Robust-U1, and the builder of interleaved inputs.

    Example:

    ```python
    >>> processor = RobustU1Processor.from_pretrained("Jiaqi-hkust/Robust-U1")
    >>> ids = processor.encode_text("Please restore this corrupted image to its clean version.")
    ```
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    def encode_text(self, text: str) -> torch.Tensor:
        """Token ids of a text piece without the ``<|im_start|>``/``<|im_end|>`` wrapper the model adds."""
        return torch.tensor(self.tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)

    def interleaved_blocks(self, items: Sequence[str | ImageInput]) -> list[Any]:
        """Turns an interleaved list of texts and images into understanding blocks.

        Each ``str`` is a text piece (wrapped in ``<|im_start|>…<|im_end|>`` by the model); every
        other item is an image (PIL, array, tensor or `pathlib.Path`) and enters through the ViT, as
        in BAGEL's understanding path.
        """
        from .packing import TextBlock, VitImageBlock

        return [
            TextBlock(self.encode_text(item)) if isinstance(item, str) else VitImageBlock(self.image_processor.vit_pixel_values(item))
            for item in items
        ]

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.batch_decode(sequences, **kwargs)

    def decode(self, token_ids, **kwargs) -> str:
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.decode(token_ids, **kwargs)


__all__ = ["RobustU1ImageProcessor", "RobustU1Processor", "to_rgb_image"]
