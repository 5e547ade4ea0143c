"""Option extraction, prompt layouts and option parsing."""

import pytest
from option_corpus import ISSUE_CASES, corpus, disagreements

from robust_u1.evaluation.mcq import split_question_options
from robust_u1.evaluation.options import extract_option, final_answer_text, parse_choice_string, strip_reasoning
from robust_u1.evaluation.prompts import build_mcq_prompt, build_open_prompt, build_rbench_prompt

OPTIONS = {"A": "dog", "B": "cat", "C": "red", "D": "red car"}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("The answer is (B).", "B"),
        ("B. cat", "B"),
        ("B", "B"),
        ("b", "B"),  # a lone lowercase letter is accepted …
        ("a cat", "B"),  # … but a lowercase "a" inside text is the article; the option text decides
        ("I think C because…", "C"),
        ("none", None),
        ("", None),
        ("A and B", None),
        ("<ANSWER>C</ANSWER>", "C"),
        ("<think>A looks plausible, maybe B.</think><ANSWER>C</ANSWER>", "C"),
        ("<think>It could be A.</think>\nThe answer is D", "D"),
        ("Let me reason.</think><answer>B</answer>", "B"),  # opening <think> was in the prompt
        ("The correct answer is C, not A.", "C"),
        ("Answer: A. B is wrong because the animal barks, which rules out every other choice here.", "A"),
        ("It is a red car parked outside.", "D"),  # "red" yields to the longer matching option "red car"
        ("Clearly a dog.", "A"),
        (
            "Looking at the image there is a dog on the grass near a red car, and the best option is B overall",
            "B",
        ),
        ("A dog and a cat are both visible here, which makes it hard to decide on anything", None),
    ],
)
def test_extract_option_tricky_answers(response, expected):
    assert extract_option(response, OPTIONS) == expected


def test_extract_option_agrees_with_the_labelled_reply_corpus(capsys):
    """>= 1,000 replies (templates × option sets, labelled by what a reader would say): all must agree."""
    items = corpus()
    assert len(items) >= 1000
    assert {item.label for item in items} >= {None, "A", "B", "E", "I", "J"}
    wrong = list(disagreements(extract_option))
    with capsys.disabled():
        print(f"\noption extraction agreement: {len(items) - len(wrong)}/{len(items)}")
    assert not wrong, "\n".join(f"{item.reply!r}: label {item.label}, extracted {got}" for item, got in wrong[:20])


@pytest.mark.parametrize(("reply", "options", "label"), ISSUE_CASES)
def test_the_answer_the_reply_commits_to_wins(reply, options, label):
    """The replies of issue 12: letters discussed after the answer, markdown, and the article "A"."""
    assert extract_option(reply, options) == label


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("（Ｂ）", "B"),  # full-width brackets and letter
        ("答案是C。选项A是错误的。", "C"),
        ("\\boxed{D}", "D"),
        ("It is not red, it is red car.", "D"),
        ("Initially I thought the answer was A, but the answer is B.", "B"),  # the last statement wins
        ("Final answer: B. (Earlier I wrote: the answer is A.)", "B"),  # a final answer outranks it
        ("<think>The answer is A.", None),  # cut off while reasoning: no answer yet
        ("A. dog\nB. cat\nC. red\nD. red car", None),  # the options echoed, nothing chosen
        ("A. dog\nB. cat\nC. red\nD. red car\nAnswer: c", "C"),
        ("The answer is A and B is wrong.", "A"),
        ("The answer is A or B.", None),
    ],
)
def test_extract_option_commitments_and_hedges(reply, expected):
    assert extract_option(reply, OPTIONS) == expected


def test_numbers_match_whole_numbers_and_number_words():
    options = ["3", "13", "3.5"]
    assert extract_option("There are 3.5 litres.", options) == "C"
    assert extract_option("I count thirteen.", options) == "B"
    assert extract_option("I count 3 of them.", options) == "A"


def test_extract_option_accepts_a_list_of_option_texts():
    assert extract_option("The answer is C", ["x", "y", "z"]) == "C"
    # D is not an option of a three-option list, so it is not a letter answer.
    assert extract_option("D", ["x", "y", "z"]) is None


def test_reasoning_is_stripped_before_looking_for_the_answer():
    assert strip_reasoning("<think>A</think> B") == "B"
    assert final_answer_text("<think>C?</think>Final: <ANSWER> B </ANSWER>") == "B"
    assert final_answer_text("no tags here") == "no tags here"


def test_mcq_prompts_match_the_official_demo_layout():
    options = {"A": "dog", "B": "cat"}
    assert build_mcq_prompt("What is shown?", options) == (
        "Question: What is shown?\nOptions:\nA. dog\nB. cat\nPlease select the correct answer from the options above.\n"
    )
    assert build_mcq_prompt("What is shown?", options, recover=True) == (
        "Question: What is shown?\nOptions:\nA. dog\nB. cat\n"
        "Please restore this corrupted image to its clean version.\n"
        "Based on what you observe in the restored image, please select the correct answer from the options above.\n"
    )
    assert build_mcq_prompt("Q?", ["x", "y"], hint="look left").startswith("Hint: look left\nQuestion: Q?\n")
    assert build_open_prompt("How many?").endswith("Answer the question using a single word or phrase.\n")


def test_rbench_prompts_match_the_official_script():
    assert build_rbench_prompt("MCQ", "Which?", "A.x; B.y") == (
        "Which?\nA.x; B.y\nAnswer with the option's letter from the given choices directly."
    )
    assert build_rbench_prompt("VQA", "What color") == "What color. Please answer no more than 10 words"
    assert build_rbench_prompt("CAP", "ignored").startswith("Please describe this image in general.")
    assert build_rbench_prompt("VQA", "What color", recover=True) == (
        "What color.\nPlease restore this corrupted image to its clean version.\n"
        "Based on what you observe in the restored image, please answer no more than 10 words"
    )
    with pytest.raises(ValueError, match="Unknown R-Bench task"):
        build_rbench_prompt("OCR", "x")


@pytest.mark.parametrize(
    ("text", "question", "options"),
    [
        (  # MMStar
            "Which option describe the object relationship in the image correctly?\n"
            "Options: A: The suitcase is on the book., B: The suitcase is beneath the cat., "
            "C: The suitcase is beneath the bed., D: The suitcase is beneath the book.",
            "Which option describe the object relationship in the image correctly?",
            {
                "A": "The suitcase is on the book.",
                "B": "The suitcase is beneath the cat.",
                "C": "The suitcase is beneath the bed.",
                "D": "The suitcase is beneath the book.",
            },
        ),
        (  # RealWorldQA
            "In which direction is the front wheel facing?\n\nA. Left\nB. Straight\nC. Right\n\n"
            "Please answer directly with only the letter of the correct option and nothing else.",
            "In which direction is the front wheel facing?",
            {"A": "Left", "B": "Straight", "C": "Right"},
        ),
        (  # open question: no options, text kept
            "How many cars are there? Please answer directly with a single word or number.",
            "How many cars are there? Please answer directly with a single word or number.",
            {},
        ),
        (  # "A." inside the question text without options is not an option list
            "Is Plan A. better than the rest?",
            "Is Plan A. better than the rest?",
            {},
        ),
    ],
)
def test_split_question_options(text, question, options):
    assert split_question_options(text) == (question, options)


def test_parse_choice_string():
    assert parse_choice_string("A.running; B.Play football; C.Play tennis") == {
        "A": "running",
        "B": "Play football",
        "C": "Play tennis",
    }
    assert parse_choice_string("N") == {}
