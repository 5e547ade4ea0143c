"""Option extraction, prompt layouts and option parsing."""

import pytest

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
