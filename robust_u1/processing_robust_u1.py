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
        >>> processor = RobustU1ImageProcessor()
        >>> vae, vit = processor.edit_pixel_values([Image.new("RGB", (640, 480))])
        >>> vae[0].shape, vit[0].shape
        (torch.Size([3, 512, 688]), torch.Size([3, 504, 686]))
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


IMAGE_PLACEHOLDER = "<|vision_start|><|vision_end|>"
"""Where an image goes in processor text: BAGEL's image markers with nothing between them (the
model puts the image's tokens there), so no token has to be added to the vocabulary."""

# BAGEL has no chat roles: a prompt is a run of text pieces (each <|im_start|>…<|im_end|>) and image
# blocks. The template renders user text as the official demo's prompt (VLMEvalKit MCQ layout, see
# robust_u1.prompting) with the recovery instruction unless `recover=False`; system and
# assistant texts are pieces as they are. Template variables: options (list or {letter: text}),
# recover (default true), hint, think (BAGEL's think system prompt first).
CHAT_TEMPLATE = """
{%- set recover = recover if recover is defined else true -%}
{%- set nl = '\n' -%}
{%- if think is defined and think -%}
<|im_start|>You should first think about the reasoning process in the mind and then provide the user with the answer. The reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning process here </think> answer here<|im_end|>
{%- endif -%}
{%- for message in messages -%}
  {%- set items = [{'type': 'text', 'text': message['content']}] if message['content'] is string else message['content'] -%}
  {%- for item in items -%}
    {%- if item['type'] == 'image' -%}
<|vision_start|><|vision_end|>
    {%- elif item['type'] == 'text' and message['role'] != 'user' -%}
<|im_start|>{{ item['text'] }}<|im_end|>
    {%- elif item['type'] == 'text' -%}
<|im_start|>
      {%- if hint is defined and hint -%}Hint: {{ hint }}{{ nl }}{%- endif -%}
Question: {{ item['text'] }}{{ nl }}
      {%- if options is defined and options -%}
Options:{{ nl }}
        {%- if options is mapping -%}
          {%- for letter, option in options.items() -%}{{ letter | string | trim | upper }}. {{ option }}{{ nl }}{%- endfor -%}
        {%- else -%}
          {%- for option in options -%}{{ 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[loop.index0] }}. {{ option }}{{ nl }}{%- endfor -%}
        {%- endif -%}
        {%- set instruction = 'Please select the correct answer from the options above.' -%}
      {%- else -%}
        {%- set instruction = 'Answer the question using a single word or phrase.' -%}
      {%- endif -%}
      {%- if recover -%}
Please restore this corrupted image to its clean version.{{ nl }}Based on what you observe in the restored image, {{ instruction[:1] | lower }}{{ instruction[1:] }}
      {%- else -%}
{{ instruction }}
      {%- endif -%}
{{ nl }}<|im_end|>
    {%- endif -%}
  {%- endfor -%}
{%- endfor -%}
"""


class RobustU1Processor(ProcessorMixin):
    """Tokenizer + image transforms of Robust-U1, and the builder of interleaved inputs.

    Inputs are built the transformers way: ``processor.apply_chat_template(messages, options=[...])``
    renders the official prompt (images as `IMAGE_PLACEHOLDER`), ``processor(text=..., images=...)``
    turns it into a `BatchFeature`, and ``model.generate(**inputs)`` reads it. The chat template is
    saved with the processor (``chat_template.jinja``).

    Example:
        >>> processor = RobustU1Processor.from_pretrained("Jiaqi-hkust/Robust-U1")
        >>> messages = [{"role": "user", "content": [{"type": "image", "image": corrupted}, {"type": "image", "image": recovered},
        ...                                          {"type": "text", "text": "What animal is shown?"}]}]
        >>> inputs = processor.apply_chat_template(messages, options=["dog", "cat"], tokenize=True, return_dict=True)
        >>> processor.batch_decode(model.generate(**inputs))
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template: str | None = None, **kwargs):
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE, **kwargs)

    def __call__(self, images=None, text: str | Sequence[str] | None = None, videos=None, audio=None, **kwargs) -> BatchFeature:
        """Tokenizes texts with `IMAGE_PLACEHOLDER` markers and transforms their images (ViT side).

        Text between markers that is not already wrapped in ``<|im_start|>…<|im_end|>`` is wrapped as
        one piece. ``images`` are taken in order of the markers over all texts (a flat list, or one list
        per text as `apply_chat_template` passes them). Returns ``input_ids`` and ``attention_mask``
        (padding / ``return_tensors`` as the tokenizer's) and ``pixel_values`` (a list of [3, H, W]
        tensors, one per image, since sizes differ).

        Example:
            >>> inputs = processor(text=IMAGE_PLACEHOLDER + "What is shown?", images=image)
            >>> ids = model.generate(**inputs)
        """
        if videos is not None or audio is not None:
            raise ValueError("Robust-U1 takes text and images only (no videos or audio).")
        if text is None:
            raise ValueError("processor(...) needs text= (with one IMAGE_PLACEHOLDER per image).")
        texts = [text] if isinstance(text, str) else list(text)
        flat_images = _flatten_images(images)
        markers = sum(t.count(IMAGE_PLACEHOLDER) for t in texts)
        if markers != len(flat_images):
            raise ValueError(
                f"The text has {markers} image placeholder(s) ({IMAGE_PLACEHOLDER}) for {len(flat_images)} image(s): "
                "put one placeholder where each image goes, e.g. with processor.apply_chat_template."
            )
        kwargs.setdefault("add_special_tokens", False)  # the pieces carry their own <|im_start|>/<|im_end|>
        text_inputs = self.tokenizer([_wrap_text_pieces(t) for t in texts], **kwargs)
        features = BatchFeature(dict(text_inputs))
        features["pixel_values"] = [self.image_processor.vit_pixel_values(image) for image in flat_images]
        return features

    def features_to_blocks(self, features) -> list[list[Any]]:
        """The interleaved understanding blocks of every sequence of a `__call__` output (padding dropped).

        Example:
            >>> blocks = processor.features_to_blocks(processor(text=IMAGE_PLACEHOLDER + "Hi", images=image))
        """
        from .packing import TextBlock, VitImageBlock

        vocab = self.tokenizer.convert_tokens_to_ids
        bos, eos, boi, eoi = (vocab(t) for t in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"))
        rows = features["input_ids"]
        masks = features.get("attention_mask")
        rows = rows.tolist() if isinstance(rows, torch.Tensor) else [list(r) for r in rows]
        if rows and not isinstance(rows[0], list):  # one unbatched sequence
            rows, masks = [rows], None if masks is None else [masks]
        masks = masks.tolist() if isinstance(masks, torch.Tensor) else masks
        images = list(features.get("pixel_values") or [])
        next_image, batch = 0, []
        for index, row in enumerate(rows):
            ids = [int(i) for i, keep in zip(row, masks[index] if masks is not None else [1] * len(row)) if keep]
            blocks, position = [], 0
            while position < len(ids):
                token = ids[position]
                if token == boi and position + 1 < len(ids) and ids[position + 1] == eoi:
                    if next_image >= len(images):
                        raise ValueError("input_ids have more image placeholders than pixel_values has images.")
                    blocks.append(VitImageBlock(torch.as_tensor(images[next_image])))
                    next_image, position = next_image + 1, position + 2
                elif token == bos and eos in ids[position + 1 :]:
                    end = ids.index(eos, position + 1)
                    blocks.append(TextBlock(torch.tensor(ids[position + 1 : end], dtype=torch.long)))
                    position = end + 1
                else:
                    raise ValueError(
                        f"input_ids of sequence {index} have token {token} outside a <|im_start|>…<|im_end|> piece or an image "
                        "placeholder: build inputs with processor(text=..., images=...) or apply_chat_template."
                    )
            batch.append(blocks)
        if next_image != len(images):
            raise ValueError(f"pixel_values has {len(images)} images but input_ids have {next_image} image placeholders.")
        return batch

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


def _flatten_images(images) -> list:
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        return [images]
    return [image for item in images for image in (item if isinstance(item, (list, tuple)) else [item]) if image is not None]


def _wrap_text_pieces(text: str) -> str:
    """Wraps every text piece between image placeholders that is not wrapped yet (whitespace-only pieces go)."""
    pieces = text.split(IMAGE_PLACEHOLDER)
    wrapped = [p if "<|im_start|>" in p else (f"<|im_start|>{p}<|im_end|>" if p.strip() else "") for p in pieces]
    return IMAGE_PLACEHOLDER.join(wrapped)


__all__ = ["CHAT_TEMPLATE", "IMAGE_PLACEHOLDER", "RobustU1ImageProcessor", "RobustU1Processor", "to_rgb_image"]
