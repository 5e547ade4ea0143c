"""Multiple-choice option extraction for the benchmark scorers.

The rule lives at the model level, in `robust_u1.option_extraction` (``answer()`` reports the same
letter the scorer counts, and the model must not import the evaluation package); this module keeps
the evaluation-side import path.
"""

from ..option_extraction import *  # noqa: F401,F403
from ..option_extraction import extract_option, final_answer_text, normalize_options, parse_choice_string, strip_reasoning  # noqa: F401
