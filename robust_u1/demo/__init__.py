"""An interactive demo of Robust-U1, like the official app: ``robust-u1 demo`` (``pip install "robust-u1[demo]"``).

Upload an image (or pick an example), optionally corrupt it first, ask a multiple-choice question:
the recovered image is shown while it is being denoised, the reasoning streams token by token, and
the answer can be compared with the baseline from the corrupted image alone. The advanced controls
are `recover()` / `answer()`'s arguments with their defaults.

Gradio is imported only when the app is built (`build_demo`, `launch_demo`); `stream_demo` is the
same run without a UI.

Example:
    >>> from robust_u1.demo import build_demo
    >>> from robust_u1.tinyworld import load_tinyworld
    >>> build_demo(*load_tinyworld()).launch()
"""

from .._lazy import lazy_attributes

_LAZY_ATTRIBUTES = {
    "build_demo": ".app",
    "launch_demo": ".app",
    "TINYWORLD_EXAMPLES": ".app",
    "DEMO_CSS": ".app",
    "DemoRequest": ".inference",
    "DemoState": ".inference",
    "DemoInputError": ".inference",
    "stream_demo": ".inference",
    "check_request": ".inference",
    "parse_options": ".inference",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES)

__all__ = sorted(_LAZY_ATTRIBUTES)
