"""Multiple-choice option extraction: which option a model's reply commits to.

VLMEvalKit's rule-based matcher (``can_infer_option`` / ``can_infer_text``) accepts a reply only when
exactly one option letter occurs in it, else exactly one option text, and leaves every other reply to
an LLM judge. Offline we have no judge, so the reply is read the way a person reads it: the sentence
that states the answer wins over letters mentioned while discussing the other options.

The reply is first reduced to the part that states the answer: ``<think>…</think>`` reasoning is
removed (text before a lone ``</think>`` and after an unclosed ``<think>`` is reasoning too), then the
last ``<answer>`` / ``<ANSWER>`` tag or ``\\boxed{…}`` is used when present. Full-width characters and
Chinese punctuation are folded to ASCII (``（Ｂ）`` → ``(B)``), markdown emphasis and LaTeX wrappers
are dropped (``**A**`` → ``A``), and a verbatim echo of the option list (``A. dog B. cat …``) is
removed. Then, in order:

1. the reply is a single letter in any form: ``B``, ``b``, ``(B)``, ``[b]``, ``Option B``;
2. an explicit commitment — ``the answer is (B)``, ``Answer: B``, ``the correct option is B``,
   ``I choose B``, ``Therefore, B``, ``B is correct``, ``答案是B``, ``选B`` — the last one wins, and a
   ``final answer`` statement wins over the others;
3. the reply starts with a letter (``B. cat — option A would bark…``), or ends with one after a comma,
   colon, sentence end or line break (``…so, B``, ``A? No. B!``);
4. exactly one option letter is mentioned without being ruled out;
5. exactly one option's text occurs as whole words (case-insensitive; ``3`` does not match inside
   ``3.5``, number words match digits, and where one matching text contains another, ``dark red``
   over ``red``, the longer wins); a text that is negated (``not red``) does not count;
6. otherwise ``None`` — the item counts as wrong.

A letter is *ruled out* when it is negated (``not B``, ``rather than B``, ``B is incorrect``,
``option B would be wrong``, ``B and C are wrong``, ``B是错误的``) and *hedged* when joined to another
one (``A or B``, ``A, B or C``).
An uppercase ``A`` or ``I`` followed by an ordinary lowercase word is the English article or pronoun
(``A car on the right``, ``I think``), and a lowercase ``a`` counts only where a letter is expected
(``answer: a``, ``(a)``), not in ``the answer is a dog``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping, Sequence

# The reply format and option lettering live with the model's prompts (`robust_u1.prompting`);
# re-exported here for the harness.
from .prompting import final_answer_text, normalize_options, parse_choice_string, strip_reasoning  # noqa: F401

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_LATEX_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}")
_MARKDOWN = re.compile(r"\*+|`+|(?<![A-Za-z0-9])_{1,2}|_{1,2}(?![A-Za-z0-9])|\$|^#+[ \t]*", re.MULTILINE)
_ABBREVIATIONS = re.compile(r"\b(?:e\.g|i\.e|etc)\.", re.IGNORECASE)
_CJK_PUNCTUATION = str.maketrans({"。": ".", "、": ",", "【": "[", "】": "]", "「": '"', "」": '"', "『": '"', "』": '"'})

# A letter that stands alone: not part of a word, not "I'm" or "A's".
_LETTER = r"(?<![A-Za-z0-9'’])([A-Za-z])(?![A-Za-z0-9'’])"
# A letter where one is expected: optionally "option"/"choice"/"选项" and an opening bracket or quote.
_SLOT = r"(?:(?:option|choice|letter|选项)\s*)?[\"'“(\[]?\s*" + _LETTER
_COPULA = (
    r"(?:is|are|was|seems|seem|looks|appears|has\s+to\s+be"
    r"|(?:would|must|should|will|can|could|might)\s+be)"
)
_ADVERB = r"(?:(?:both|all|definitely|clearly|obviously|also|probably|likely|certainly|indeed|actually|surely)\s+)?"
_AFTER_SLOT = r"\s*[)\]\"”']?\s*(?:\([^()]*\)\s*)?"  # a closing bracket, then maybe the option text in brackets
_IT_IS = r"(?:it(?:'s|’s|\s+is)\s+)"
_WRONG = (
    r"(?:not\b|incorrect|wrong|false|unlikely|implausible|inaccurate|impossible|ruled\s+out|eliminated|excluded"
    r"|a\s+distractor|irrelevant|invalid)"
)
_WRONG_PLURAL = (
    r"(?:not\b|incorrect|wrong|false|unlikely|implausible|inaccurate|impossible|ruled\s+out|eliminated|excluded"
    r"|distractors|irrelevant|invalid)"
)
_GOOD = r"(?:correct|right|best|better|true|accurate|most\s+(?:likely|accurate|appropriate)|answer)\b"
_JOIN = r"(?:,\s*(?:(?:or|and)\s+)?|(?:or|and|/|&|或者?|和|与)\s*)"  # "A, B", "A or B", "A和B"

# Statements that commit to a letter; the letter is the last group of each.
_COMMITMENTS = [
    rf"\b(?:final\s+|correct\s+|right\s+|best\s+)?answer\s*(?:to\s+(?:this|the)\s+question\s*)?"
    rf"(?:[:=\-]|{_COPULA}|here\s+is)?\s*:?\s*{_SLOT}",
    r"\b(?:correct|right|best|true|most\s+(?:likely|appropriate|accurate|suitable|plausible|reasonable)|appropriate"
    r"|accurate|suitable|only\s+correct|only\s+possible)\s+(?:option|choice|one|response|selection)\s*"
    rf"(?:[:=]|{_COPULA}|here\s+is)?\s*:?\s*{_SLOT}",
    rf"\b(?:i(?:'d|’d|\s+would|\s+will|'ll|’ll)?\s+)?(?:choose|chose|pick|select|go\s+with|opt\s+for)\s*:?\s*{_SLOT}",
    rf"\bi(?:'d|’d|\s+would)\s+say\s*:?\s*{_SLOT}",
    rf"\bmy\s+(?:answer|choice|pick|selection|guess)\s*(?:[:=]|{_COPULA})?\s*{_SLOT}",
    rf"\bi\s+(?:think|believe|guess)\s+(?:{_IT_IS}|that\s+)?{_SLOT}",
    rf"\b(?:so|therefore|thus|hence|consequently|in\s+conclusion|overall|conclusion)\s*[,:]?\s*{_IT_IS}?{_SLOT}",
    rf"{_SLOT}{_AFTER_SLOT}(?:{_COPULA})\s+{_ADVERB}(?:the\s+)?{_GOOD}",
    rf"{_SLOT}{_AFTER_SLOT}(?:fits|matches|describes)\s+(?:the\s+image\s+)?(?:best|better|correctly)\b",
    rf"答案\s*(?:应该|应|就)?\s*(?:是|为|選|选)?\s*[:]?\s*{_SLOT}",
    rf"(?:正确|最佳|最合适的?|合适的?)\s*(?:的)?\s*(?:答案|选项|选择)\s*(?:应该|应)?\s*(?:是|为)?\s*[:]?\s*{_SLOT}",
    rf"(?:应该|应|我|故|所以|因此)?\s*选(?:择)?\s*{_SLOT}",
    rf"{_SLOT}\s*[)\]]?\s*(?:是|为)?\s*(?:正确|对)(?!吗)",
]
_COMMITMENT = [re.compile(pattern, re.IGNORECASE) for pattern in _COMMITMENTS]
_FINAL = re.compile(r"\bfinal\b|最终", re.IGNORECASE)

_NEGATION_BEFORE = re.compile(
    r"(?:\b(?:not|never|rather\s+than|instead\s+of|other\s+than|except|excluding|exclude|eliminate[sd]?|eliminating|"
    r"rule[sd]?\s+out|ruling\s+out|neither|nor|unlike|than|versus|vs\.?)|n't|n’t|不是|排除|而非|并非|非)"
    r"\s*(?:(?:be|choose|pick|select)\s+)?(?:(?:option|choice|选项)\s*)?[\"'“(\[]?\s*$",
    re.IGNORECASE,
)
_NEGATION_AFTER = re.compile(
    rf"^{_AFTER_SLOT}(?:[:,]\s*)?"
    rf"(?:{_COPULA}\s+{_ADVERB}{_WRONG}"
    r"|(?:isn't|isn’t|is\s+not|doesn't|doesn’t|does\s+not|don't|do\s+not|cannot|can't|can’t|fails?\b|wasn't|won't)"
    r"|(?:是)?(?:错误|错|不正确|不对|不符合|不是|被排除|可以排除))",
    re.IGNORECASE,
)
_HEDGE_AFTER = re.compile(
    rf"^\s*[)\]\"”']?\s*{_JOIN}(?:(?:option|choice|选项)\s*)?[\"'“(\[]?\s*{_LETTER}",
    re.IGNORECASE,
)
_PLURAL_NEGATION = re.compile(
    rf"^{_AFTER_SLOT}(?:(?:are|were)\s+(?:(?:both|all)\s+)?{_ADVERB}{_WRONG_PLURAL}"
    r"|aren't|aren’t|are\s+not|don't|don’t|do\s+not|can\s+be\s+(?:ruled\s+out|eliminated|excluded))",
    re.IGNORECASE,
)
_HEDGE_BEFORE = re.compile(
    r"(?:(?<![A-Za-z0-9'’])([A-Za-z])[)\]\"”']?\s*(?:,\s*(?:(?:or|and)\b)?|(?:or\b|and\b|/|&|或者?|和|与))|\beither)"
    r"\s*(?:(?:option|choice)\s*)?[\"'“(\[]?\s*$",
    re.IGNORECASE,
)

# Words that cannot follow the article "a" (or the pronoun "I"): after them, "A" / "I" is a letter.
_CONNECTIVES = frozenset(
    """is are was were be been being would will should could can might must may seems seem appears looks fits
    matches describes shows represents corresponds remains stands wins has does did isn't doesn't and or but nor
    because since as given so therefore thus then here there which that from in on at by with without for of to
    not best better correctly clearly definitely only also too again instead rather over versus vs""".split()
)
# The pronoun "I" is followed by modal verbs and adverbs ("I would say", "I can see"), the letter is not.
_AFTER_LETTER_I = _CONNECTIVES - frozenset(
    "would will should could can might must may was were did also too then only clearly definitely".split()
)
_NEXT_WORD = re.compile(r"^[ \t]+([a-z][a-z'’]*)")
_START_LETTER = re.compile(
    r"^\s*(?:(?:option|choice)\s*)?[\"'“(\[]?\s*" + _LETTER + r"\s*(?:[)\]\"”'.:,(]|[-–—]|\n|$)", re.IGNORECASE
)
_END_LETTER = re.compile(
    r"(?:^|[,:;\n]|[-–—.?!]\s)\s*(?:(?:option|choice)\s*)?[\"'“(\[]?\s*" + _LETTER + r"\s*[)\]\"”']?\s*[.!]*\s*$",
    re.IGNORECASE,
)
_LONE_LETTER = re.compile(r"^\W*(?:(?:option|choice|answer)\W*)?([A-Za-z])\W*$", re.IGNORECASE)

_NUMBER_WORDS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
    "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve", "13": "thirteen", "14": "fourteen",
    "15": "fifteen", "16": "sixteen", "17": "seventeen", "18": "eighteen", "19": "nineteen", "20": "twenty",
}  # fmt: skip
_TEXT_BEFORE = r"(?<![a-z0-9])(?<![0-9][.,])"
_TEXT_AFTER = r"(?![a-z0-9])(?![.,][0-9])"
_TEXT_NEGATION_BEFORE = re.compile(
    r"(?:\b(?:not|never|rather\s+than|instead\s+of|other\s+than|than|neither|nor|unlike|no\s+longer)|n't|n’t|不是|而非|并非)"
    r"\s*(?:(?:a|an|the)\s+)?$",
    re.IGNORECASE,
)


def extract_option(response: str | None, options: Mapping[str, str] | Sequence[str]) -> str | None:
    """Extract the option letter a model reply commits to, or ``None`` when it commits to none.

    The rules are in the module docstring; on the labelled corpus of ``tests/option_corpus.py`` they
    agree with a human reader on every reply.

    Example:
        >>> extract_option("The answer is (B).", {"A": "dog", "B": "cat"})
        'B'
        >>> extract_option("The answer is A. Option B is incorrect because it barks.", {"A": "dog", "B": "cat"})
        'A'
        >>> extract_option("<think>A looks odd</think><ANSWER>C</ANSWER>", ["x", "y", "z"])
        'C'
        >>> extract_option("A car on the right", ["left", "right", "center"])
        'B'
        >>> extract_option("A and B", {"A": "dog", "B": "cat"}) is None
        True
    """
    if response is None:
        return None
    choices = normalize_options(options)
    text = _answer_part(str(response))
    if not text:
        return None
    text = _remove_option_echo(text, choices)

    lone = _LONE_LETTER.match(text)
    if lone and lone.group(1).upper() in choices:
        return lone.group(1).upper()

    committed = _last_commitment(text, choices)
    if committed is not None:
        return committed

    for pattern in (_START_LETTER, _END_LETTER):
        found = pattern.search(text)
        if found and _is_letter(text, found.start(1), choices, expected=True) and not _ruled_out(text, found, choices):
            return found.group(1).upper()

    mentioned = {
        found.group(1)
        for found in re.finditer(_LETTER, text)
        if found.group(1).isupper() and _is_letter(text, found.start(1), choices, expected=False)
        and not _ruled_out(text, found, choices)
    }  # fmt: skip
    if len(mentioned) == 1:
        return mentioned.pop()
    if mentioned:
        return None  # several letters stand: the reply hedges
    return _match_option_text(text, choices)


def _answer_part(response: str) -> str:
    text = unicodedata.normalize("NFKC", response).translate(_CJK_PUNCTUATION)
    text = _THINK_BLOCK.sub(" ", text)
    text = _THINK_CLOSE.split(text)[-1]
    # A reply cut off while still reasoning has not answered yet.
    text = _THINK_OPEN.split(text, maxsplit=1)[0]
    tagged = _ANSWER_TAG.findall(text)
    if tagged:
        text = tagged[-1]
    text = _LATEX_WRAPPER.sub(r"\1", text)  # first, so that \boxed{\text{B}} has no nested braces left
    boxed = _BOXED.findall(text)
    if boxed:
        text = boxed[-1]
    text = _MARKDOWN.sub("", text)
    text = _ABBREVIATIONS.sub(" ", text)
    return text.strip()


def _remove_option_echo(text: str, choices: dict[str, str]) -> str:
    """Drop runs of two or more consecutive ``X. option text`` items: the model repeating the options."""
    items = []
    for letter, option_text in choices.items():
        needle = re.escape(_clean_option_text(option_text))
        if not needle:
            continue
        item = rf"(?<![A-Za-z0-9])[(\[]?{re.escape(letter)}[.:)\]]\s*{needle}\.?"
        items.extend((found.start(), found.end()) for found in re.finditer(item, text, re.IGNORECASE))
    items.sort()
    runs: list[list[tuple[int, int]]] = []
    for start, end in items:
        if runs and re.fullmatch(r"[\s,;|\-]*(?:or\s*)?", text[runs[-1][-1][1] : start]):
            runs[-1].append((start, end))
        else:
            runs.append([(start, end)])
    for run in reversed(runs):
        if len(run) >= 2:
            text = text[: run[0][0]] + " " + text[run[-1][1] :]
    return text.strip()


def _is_letter(text: str, position: int, choices: dict[str, str], *, expected: bool) -> bool:
    """Whether the single character at ``position`` is an option letter rather than a word ("a", "I")."""
    char = text[position]
    if char.upper() not in choices:
        return False
    if char.islower() and not expected:
        return False
    if char not in "AaIi" and char.isupper():
        return True
    if char in "bcdefghjklmnopqrstuvwxyz":  # lowercase letters are only read where a letter is expected
        return True
    following = _NEXT_WORD.match(text[position + 1 :])
    # "A car", "I think", "is a dog": the article or pronoun, unless a verb or conjunction follows.
    return following is None or following.group(1) in (_AFTER_LETTER_I if char in "Ii" else _CONNECTIVES)


def _ruled_out(text: str, found: re.Match[str], choices: dict[str, str]) -> bool:
    """Whether the letter of ``found`` is negated ("not B", "B is wrong") or hedged ("A or B")."""
    before, after = text[: found.start(1)], text[found.end(1) :]
    if _NEGATION_BEFORE.search(before[-40:]) or _NEGATION_AFTER.match(after) or _in_negated_list(after):
        return True
    hedge = _HEDGE_AFTER.match(after)
    if hedge:
        other = found.end(1) + hedge.start(1)
        # "A and B is wrong" states A; "A or B", "A and B", "A, B or C" leave the choice open.
        different = text[other].upper() != found.group(1).upper()
        if different and _is_letter(text, other, choices, expected=True) and not _NEGATION_AFTER.match(text[other + 1 :]):
            return True
    hedge = _HEDGE_BEFORE.search(before[-30:])
    if hedge:
        if hedge.group(1) is None:
            return True  # "either A"
        other = len(before) - len(before[-30:]) + hedge.start(1)
        different = text[other].upper() != found.group(1).upper()
        return (
            different
            and _is_letter(text, other, choices, expected=True)
            and not _NEGATION_BEFORE.search(text[:other][-40:])
        )
    return False


def _in_negated_list(after: str) -> bool:
    """Whether the letter before ``after`` heads a list that is negated as a whole ("A, B and C are wrong")."""
    for _ in range(len(string.ascii_uppercase)):
        if _PLURAL_NEGATION.match(after):
            return True
        following = _HEDGE_AFTER.match(after)
        if following is None:
            return False
        after = after[following.end(1) :]
    return False


def _last_commitment(text: str, choices: dict[str, str]) -> str | None:
    statements: list[tuple[bool, int, str]] = []
    for pattern in _COMMITMENT:
        for found in pattern.finditer(text):
            if not _is_letter(text, found.start(1), choices, expected=True) or _ruled_out(text, found, choices):
                continue
            is_final = bool(_FINAL.search(text[max(0, found.start() - 12) : found.start(1)]))
            statements.append((is_final, found.start(1), found.group(1).upper()))
    if not statements:
        return None
    # A "final answer" outranks earlier statements; otherwise the last statement is the conclusion.
    return max(statements)[2]


def _clean_option_text(option_text: str) -> str:
    text = unicodedata.normalize("NFKC", str(option_text)).translate(_CJK_PUNCTUATION)
    return text.strip().rstrip(".").strip().lower()


def _match_option_text(text: str, choices: dict[str, str]) -> str | None:
    lowered = text.lower()
    occurrences: list[tuple[int, int, str, bool]] = []  # start, end, letter, negated
    for letter, option_text in choices.items():
        needle = _clean_option_text(option_text)
        if not needle:
            continue
        spellings = [re.escape(needle)]
        if needle in _NUMBER_WORDS:
            spellings.append(_NUMBER_WORDS[needle])
        for found in re.finditer(rf"{_TEXT_BEFORE}(?:{'|'.join(spellings)}){_TEXT_AFTER}", lowered):
            negated = bool(_TEXT_NEGATION_BEFORE.search(lowered[max(0, found.start() - 30) : found.start()]))
            occurrences.append((found.start(), found.end(), letter, negated))
    # "red" inside a mention of "dark red" is part of that mention, not a mention of its own.
    standalone = [
        (start, end, letter, negated)
        for start, end, letter, negated in occurrences
        if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _, _ in occurrences)
    ]
    matching = {letter: _clean_option_text(choices[letter]) for _, _, letter, negated in standalone if not negated}
    # Where one matching text contains another ("red car" and "red"), the longer is the answer.
    maximal = [
        letter
        for letter, needle in matching.items()
        if not any(needle != other and needle in other for other in matching.values())
    ]
    return maximal[0] if len(maximal) == 1 else None
