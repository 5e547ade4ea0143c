"""Hugging Face Space of Robust-U1: the library's demo (`robust_u1.demo`), served by `python app.py`.

Settings (Space variables): ``ROBUST_U1_MODEL`` (default ``tinyworld``, the bundled model; or a Hub id
/ folder such as ``Jiaqi-hkust/Robust-U1``) and ``ROBUST_U1_CONCURRENCY`` (runs of the model at once,
default 1).
"""

from __future__ import annotations

import os

import torch

from robust_u1.demo import DEMO_CSS, TINYWORLD_EXAMPLES, build_demo

MODEL = os.environ.get("ROBUST_U1_MODEL", "tinyworld")
CONCURRENCY = int(os.environ.get("ROBUST_U1_CONCURRENCY", "1"))


def load_model(name: str):
    """The bundled TinyWorld model, or a checkpoint in bf16 on the GPU when there is one."""
    if name == "tinyworld":
        from robust_u1.tinyworld import load_tinyworld

        return load_tinyworld()
    from robust_u1 import RobustU1ForConditionalGeneration

    cuda = torch.cuda.is_available()
    model = RobustU1ForConditionalGeneration.from_pretrained(name, dtype=torch.bfloat16 if cuda else torch.float32)
    return (model.to("cuda") if cuda else model), model.processor


def create_demo(name: str = MODEL, concurrency: int = CONCURRENCY):
    """Builds the Space's app (the examples are TinyWorld's, so only shown for it)."""
    model, processor = load_model(name)
    demo = build_demo(model, processor, examples=TINYWORLD_EXAMPLES if name == "tinyworld" else [], title="Robust-U1")
    demo.queue(default_concurrency_limit=concurrency)
    return demo


demo = create_demo()

if __name__ == "__main__":
    demo.launch(css=DEMO_CSS)
