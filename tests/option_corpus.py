"""A labelled corpus of multiple-choice replies for option extraction.

Replies are generated from templates × option sets × the correct option. Each template carries the
label a person reading the reply would give: ``"L"`` (the option the reply commits to) or ``None``
(the reply commits to no option). Labels are written from the reply's meaning, never from what the
extractor returns.

Placeholders: ``{L}`` the chosen letter, ``{l}`` it in lowercase, ``{FL}`` it full-width, ``{T}`` its
text, ``{M}`` / ``{TM}`` and ``{N}`` / ``{TN}`` two other options, ``{ECHO}`` / ``{ECHO_INLINE}`` the
whole option list as a model might repeat it, ``{T_WORD}`` a number text spelled out.

Run ``python tests/option_corpus.py`` to print the agreement and every disagreement.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass

L = "L"  # label: the chosen option


@dataclass(frozen=True)
class OptionSet:
    name: str
    texts: tuple[str, ...]
    correct: tuple[int, ...]  # which options are used as the correct one
    tags: frozenset[str] = frozenset()

    @property
    def options(self) -> dict[str, str]:
        return {string.ascii_uppercase[index]: text for index, text in enumerate(self.texts)}


OPTION_SETS = [
    OptionSet("animals", ("dog", "cat", "bird", "horse"), (0, 1, 2, 3), frozenset({"noun", "article"})),
    OptionSet("directions", ("left", "right", "center"), (0, 1, 2)),
    OptionSet("nested colours", ("red", "dark red", "blue", "light blue"), (0, 1, 2, 3), frozenset({"noun"})),
    OptionSet("numbers", ("3", "13", "30", "3.5"), (0, 1, 2, 3), frozenset({"number"})),
    OptionSet("yes/no", ("Yes", "No"), (0, 1), frozenset({"two"})),
    OptionSet(
        "MMStar sentences",
        ("The suitcase is on the book.", "The suitcase is beneath the cat.", "The suitcase is beneath the bed.",
         "The suitcase is beneath the book."),
        (0, 1, 2, 3),
    ),  # fmt: skip
    OptionSet("Chinese", ("猫", "狗", "鸟", "马"), (0, 1, 2, 3), frozenset({"noun"})),
    OptionSet("six fruits", ("apple", "banana", "cherry", "grape", "lemon", "mango"), (0, 3, 4, 5), frozenset({"noun"})),
    OptionSet("digits", tuple(str(digit) for digit in range(10)), (0, 4, 8, 9), frozenset({"number"})),
    OptionSet("nested objects", ("dog", "cat", "red", "red car"), (0, 1, 2, 3), frozenset({"noun"})),
]

FULL_WIDTH = {letter: chr(ord("Ａ") + index) for index, letter in enumerate(string.ascii_uppercase)}
NUMBER_WORDS = {"3": "three", "13": "thirteen", "0": "zero", "4": "four", "8": "eight", "9": "nine"}

# (template, label, required tag or None)
TEMPLATES: list[tuple[str, str | None, str | None]] = [
    # --- the letter alone, in every form models write it
    ("{L}", L, None),
    ("{l}", L, None),
    ("({L})", L, None),
    ("({l})", L, None),
    ("{L}.", L, None),
    ("{L})", L, None),
    ("[{L}]", L, None),
    ("**{L}**", L, None),
    ("`{L}`", L, None),
    ("Option {L}", L, None),
    ("option {l}", L, None),
    ("Option ({L})", L, None),
    ("answer: {l}", L, None),
    ("Answer: {L}", L, None),
    ("ANSWER: {L}", L, None),
    ("Answer - {L}", L, None),
    ("{FL}", L, None),
    ("（{FL}）", L, None),
    ("（{L}）", L, None),
    ("【{L}】", L, None),
    ("{L}\n", L, None),
    # --- the letter with its text
    ("{L}. {T}", L, None),
    ("({L}) {T}", L, None),
    ("{L}: {T}", L, None),
    ("{L}) {T}", L, None),
    ("**{L}. {T}**", L, None),
    ("**({L})** {T}", L, None),
    ("{L} - {T}", L, None),
    ("Answer: ({L}) {T}", L, None),
    # --- tags, LaTeX, markdown headings
    ("\\boxed{{{L}}}", L, None),
    ("$\\boxed{{{L}}}$", L, None),
    ("The final answer is $\\boxed{{\\text{{{L}}}}}$.", L, None),
    ("The answer is $\\text{{{L}}}$.", L, None),
    ("<answer>{L}</answer>", L, None),
    ("<ANSWER>{L}</ANSWER>", L, None),
    ("<answer>{L}. {T}</answer>", L, None),
    ("<ANSWER> {L} </ANSWER>", L, None),
    ("## Final Answer\n**{L}**", L, None),
    ("### Answer\n{L}. {T}", L, None),
    ("Correct answer: **{L}**", L, None),
    # --- explicit statements
    ("The answer is {L}.", L, None),
    ("The answer is ({L}).", L, None),
    ("The answer is: {L}", L, None),
    ("The answer is option {L}.", L, None),
    ("The answer is {l}.", L, None),
    ("the answer is ({l})", L, None),
    ("The correct answer is {L}.", L, None),
    ("The correct option is [{L}].", L, None),
    ("The best choice is ({L}) {T}.", L, None),
    ("Final answer: {L}", L, None),
    ("I choose {L}.", L, None),
    ("I'd go with {L}.", L, None),
    ("I would pick option {L}.", L, None),
    ("My answer is {L}.", L, None),
    ("{L} is correct.", L, None),
    ("{L} is the correct answer.", L, None),
    ("Option {L} is the best answer.", L, None),
    ("({L}) {T} is correct.", L, None),
    ("I think {L}.", L, None),
    ("I believe it's {L}.", L, None),
    ("So the answer is {L}.", L, None),
    ("Therefore, {L}.", L, None),
    ("Answer：{FL}", L, None),
    ("I think {L} because the picture makes it clear.", L, None),
    # --- reasoning that mentions other options before or after the answer
    ("The answer is {L}. Option {M} is incorrect because the image does not show {TM}.", L, None),
    ("The answer is {L}, not option {M}.", L, None),
    ("Answer: {L}. Choice {M} would be wrong.", L, None),
    ("The correct answer is **{L}**. Here's why: option {M} ({TM}) does not match the image.", L, None),
    ("Option {M} ({TM}) does not match what is visible.\n\n**Answer:** {L}", L, None),
    (
        "Let's examine each option. Option {M} says {TM}, which is not visible. Option {L} says {T}, which "
        "matches. So the answer is {L}.",
        L,
        None,
    ),
    ("Option {M} is wrong. Option {N} is also wrong. The answer is {L}.", L, None),
    ("{M} can be ruled out, and so can {N}. The correct option is {L}.", L, None),
    ("Not {M}. The answer is {L}.", L, None),
    ("The answer is {L} rather than {M}.", L, None),
    ("It's {L}, not {M}.", L, None),
    ("Between {M} and {L}, {L} fits better.", L, None),
    ("Option {M} is close, but {L} is better.", L, None),
    ("{L}. {T}\n\nExplanation: option {M} ({TM}) is incorrect because it does not match the image.", L, None),
    ("({L}) {T}. Option {M} would describe a different scene.", L, None),
    ("**{L}**\n\nOption {M} is wrong because the picture clearly differs.", L, None),
    ("After comparing option {M} with option {L}, I choose {L}.", L, None),
    ("Initially I thought the answer was {M}, but looking again, the answer is {L}.", L, None),
    ("The answer is {M}... wait, no. The correct answer is {L}.", L, None),
    ("Both {M} and {N} are incorrect. Thus, the answer is {L}.", L, None),
    ("A careful look at the image settles it. The answer is {L}.", L, None),
    ("A quick comparison: {M} shows {TM}, {L} shows {T}. Final answer: {L}", L, None),
    ("- Option {M}: {TM} ✗\n- Option {L}: {T} ✓\n\n**Answer: {L}**", L, None),
    ("Final answer: {L}. (Earlier I considered {M}.)", L, None),
    ("The answer is definitely not {M}. It is {L}.", L, None),
    ("Is it {M}? No. Is it {L}? Yes, the answer is {L}.", L, None),
    ("Options {M} and {N} are wrong; the answer is {L}.", L, None),
    ("The correct answer is {L} because option {M} is inconsistent with the scene.", L, None),
    ("**Answer: {L}**\n\nWhy not {M}? Because it does not fit.", L, None),
    ("Based on the image, the most likely answer is {L}.", L, None),
    ("The image clearly depicts {T}, so I'll choose {L}.", L, None),
    ("Looking closely, {L} ({T}) is the right option.", L, None),
    ("Correct: {L}", L, None),
    ("{L} — {T}", L, None),
    ("Option {L} ✅", L, None),
    ("I'm fairly confident the answer is {L}.", L, None),
    ("It has to be {L}.", L, None),
    ("Is it {TM}? No — the image shows {T}, so {L}.", L, None),
    ("Answer: Option {L} ({T})", L, None),
    ("Selected option: {L}", L, None),
    ("{L} is the most likely answer, although {M} is possible.", L, None),
    ("Not sure, but probably {L}.", L, None),
    ("Could it be {M}? Unlikely. I'd say {L}.", L, None),
    ("Answer:\n\n{L}", L, None),
    ('The answer is "{L}".', L, None),
    ("**Final Answer:** {L}) {T}", L, None),
    ("Reasoning: option {M} ({TM}) contradicts the image.\nConclusion: {L}", L, None),
    ("It can't be {M} and it isn't {N}, so it must be {L}.", L, None),
    ("The answer isn't {M}; it's {L}.", L, None),
    ("{L}!", L, None),
    ("Option {L} is correct, while option {M} is not.", L, None),
    ("I'll answer {L}.", L, None),
    ("Answer: The correct option is {L}.", L, None),
    ("The correct answer is: **{L}) {T}**", L, None),
    ("**{L}) {T}**\n\nThe image shows it clearly.", L, None),
    ("Answer: {L}\n\nReasoning: The image shows {T}. Options {M} and {N} do not match.", L, None),
    ("Based on my analysis, option {L} ({T}) is the most accurate.", L, None),
    ("The image matches what option {L} describes.", L, None),
    ("{L} ({T}) — the other options ({M}, {N}) don't fit.", L, None),
    ("The answer is {L}: {T}.", L, None),
    ("Of the options, {L} is the only one that matches.", L, None),
    ("{L} seems right.", L, None),
    ("Clearly, the image shows {T}; hence {L}.", L, None),
    ("Option {L}. {T}.", L, None),
    ("I am confident it is {L}.", L, None),
    ("I can't be sure, but {L} seems most likely.", L, None),
    ("Correct option: ({L})", L, None),
    ("Answer → {L}", L, None),
    ("我认为答案是{L}。", L, None),
    ("根据图片内容，应该选择{L}选项。", L, None),
    ("正确选项：{L}", L, None),
    ("{L}选项正确。", L, None),
    ("The correct answer is {L} ({T}), as the image clearly shows.", L, None),
    ("Answer: {L}) {T}\nConfidence: high", L, None),
    ("{T} — so the answer is {L}.", L, None),
    ("Hmm, {M}? No. {N}? No. {L}!", L, None),
    ("Looking at the picture: {L}", L, None),
    ("The best match is {L}.", L, None),
    ("It should be {L}, because {M} and {N} are clearly wrong.", L, None),
    ("Options {M} and {N} are incorrect, so {L}.", L, None),
    ("{M}, {N} are both wrong here; {L} fits.", L, None),
    ("It is {L}. The other choices are wrong.", L, None),
    ("{L}, since the image shows {T}.", L, None),
    # --- think blocks
    ("<think>Option {M} looks plausible, but the details point elsewhere.</think>The answer is {L}.", L, None),
    ("<think>I considered {M} and {N}.</think>\n{L}", L, None),
    ("<think>Maybe {M}? The answer might be {M}.</think><answer>{L}</answer>", L, None),
    ("Let me reason about {M} first.</think>{L}. {T}", L, None),
    ("<think>\nThe answer might be {M}.\n</think>\n\n**Answer:** ({L})", L, None),
    ("<think>{M} is tempting.</think>\nFinal answer: {L}", L, None),
    ("<THINK>Answer: {M}?</THINK> {L}", L, None),
    # --- the options echoed
    ("{ECHO}\nAnswer: {L}", L, None),
    ("{ECHO}\n\nThe correct answer is {L}.", L, None),
    ("Options: {ECHO_INLINE}. I choose {L}.", L, None),
    ("{ECHO_INLINE}\n{L}", L, None),
    # --- Chinese
    ("答案是{L}", L, None),
    ("答案：{L}", L, None),
    ("答案是（{L}）。", L, None),
    ("正确答案是{L}。", L, None),
    ("我选择{L}。", L, None),
    ("选{L}", L, None),
    ("应选{L}。", L, None),
    ("{L}。{T}", L, None),
    ("{L}是正确的。", L, None),
    ("选项{M}是错误的，答案是{L}。", L, None),
    ("根据图片，正确答案为{L}。", L, None),
    ("答案：{FL}", L, None),
    ("最佳选项是{L}", L, None),
    ("我选择选项{L}，因为选项{M}不符合图片。", L, None),
    # --- the option text only (whole words, longest text wins, negated texts do not count)
    ("{T}", L, None),
    ("{T}.", L, None),
    ("It is {T}.", L, None),
    ("The image shows {T}.", L, None),
    ("I see {T} in the picture.", L, None),
    ("Looks like {T} to me.", L, None),
    ("Answer: {T}", L, None),
    ("The answer is {T}.", L, None),
    ("<answer>{T}</answer>", L, None),
    ("The picture contains {T}.", L, None),
    ("I can see {T} here.", L, None),
    ("I would say {T}.", L, None),
    ("It is not {TM}, it is {T}.", L, "noun"),
    ("Definitely {T}, not {TM}.", L, "noun"),
    ("Clearly {T}.", L, None),
    ("The answer should be {T}.", L, None),
    ("There are {T_WORD}.", L, "number"),
    ("The count is {T}.", L, "number"),
    ("The answer is a {T}.", L, "article"),
    ("A {T}.", L, "article"),
    ("It's a {T}, clearly.", L, "article"),
    # --- no option
    ("", None, None),
    ("   ", None, None),
    ("I don't know.", None, None),
    ("I cannot determine the answer from the image.", None, None),
    ("The image is too blurry to tell.", None, None),
    ("The answer could be {L} or {M}.", None, None),
    ("{L} or {M}", None, None),
    ("Both {L} and {M} seem possible.", None, None),
    ("Either {L} or {M}.", None, None),
    ("Neither {L} nor {M}.", None, None),
    ("{L} and {M}", None, None),
    ("{ECHO}", None, None),
    ("{ECHO_INLINE}", None, None),
    ("<think>Option {M} shows {TM}, while option {L}", None, None),
    ("Option {L} is incorrect.", None, "not-two"),
    ("I'm not sure whether it's {L} or {M}.", None, None),
    ("None of the options are correct.", None, None),
    ("The image does not show enough detail to choose.", None, None),
    ("It might be {L}, but it could also be {M}.", None, None),
    ("I can't tell whether it's {L}, {M}, or {N}.", None, None),
    ("All of the options could be correct.", None, None),
    ("None of them; the image shows something else.", None, None),
    ("无法确定。", None, None),
    ("我不知道。", None, None),
]

# Replies quoted in issue 12, with the options they were checked against.
ISSUE_CASES: list[tuple[str, dict[str, str], str | None]] = [
    ("The answer is A. Option B is incorrect because …", {"A": "dog", "B": "cat", "C": "bird"}, "A"),
    ("The answer is A, not option B.", {"A": "dog", "B": "cat", "C": "bird"}, "A"),
    ("Answer: A. Choice B would be wrong.", {"A": "dog", "B": "cat", "C": "bird"}, "A"),
    ("The correct answer is **A**. Here's why: option B …", {"A": "dog", "B": "cat", "C": "bird"}, "A"),
    ("Option B shows a cat, which is not what we see.\n**Answer:** A", {"A": "dog", "B": "cat", "C": "bird"}, "A"),
    ("A car on the right", {"A": "left", "B": "right", "C": "center"}, "B"),
    (None, {"A": "dog", "B": "cat"}, None),
]


@dataclass(frozen=True)
class LabelledReply:
    reply: str | None
    options: dict[str, str]
    label: str | None
    template: str
    option_set: str


def _fields(option_set: OptionSet, correct: int) -> dict[str, str]:
    options = option_set.options
    letters = list(options)
    letter = letters[correct]
    other = letters[(correct + 1) % len(letters)]
    third = letters[(correct + 2) % len(letters)]
    return {
        "L": letter,
        "l": letter.lower(),
        "FL": FULL_WIDTH[letter],
        "T": options[letter],
        "M": other,
        "TM": options[other],
        "N": third,
        "TN": options[third],
        "ECHO": "\n".join(f"{key}. {text}" for key, text in options.items()),
        "ECHO_INLINE": " ".join(f"({key}) {text}" for key, text in options.items()),
        "T_WORD": NUMBER_WORDS.get(options[letter], ""),
    }


def _applies(tag: str | None, option_set: OptionSet) -> bool:
    if tag is None:
        return True
    if tag == "not-two":
        return len(option_set.texts) > 2
    return tag in option_set.tags


def corpus() -> list[LabelledReply]:
    """Every labelled reply: templates × option sets × correct options, then the issue's own cases."""
    replies = []
    for option_set in OPTION_SETS:
        for correct in option_set.correct:
            fields = _fields(option_set, correct)
            for template, label, tag in TEMPLATES:
                if not _applies(tag, option_set):
                    continue
                if "{T_WORD}" in template and not fields["T_WORD"]:
                    continue
                # The third option must differ from the other two for "{N}" templates.
                if "{N}" in template and len(option_set.texts) < 3:
                    continue
                replies.append(
                    LabelledReply(
                        template.format(**fields),
                        option_set.options,
                        fields["L"] if label == L else None,
                        template,
                        option_set.name,
                    )
                )
    for reply, options, label in ISSUE_CASES:
        replies.append(LabelledReply(reply, options, label, "issue 12", "issue 12"))
    return replies


def disagreements(extract) -> Iterator[tuple[LabelledReply, str | None]]:
    """The labelled replies on which ``extract(reply, options)`` differs from the label."""
    for item in corpus():
        predicted = extract(item.reply, item.options)
        if predicted != item.label:
            yield item, predicted


if __name__ == "__main__":
    from robust_u1.evaluation.options import extract_option

    items = corpus()
    wrong = list(disagreements(extract_option))
    for item, predicted in wrong:
        print(f"[{item.option_set}] {item.reply!r}: label {item.label}, extracted {predicted}")
    print(f"agreement {len(items) - len(wrong)}/{len(items)} = {(len(items) - len(wrong)) / len(items):.2%}")
