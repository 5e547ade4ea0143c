"""R-Bench judges: scoring rules, the OpenAI-compatible HTTP client (against a local server), the transformers judge."""

import socket

import pytest

from helpers import chat_reply
from robust_u1.evaluation.judges import (
    ChatJudge,
    JudgeRequestError,
    MissingAPIKeyError,
    OpenAICompatibleJudge,
    TransformersJudge,
    parse_judge_score,
)


class ScriptedJudge(ChatJudge):
    name = "scripted"

    def __init__(self, replies, repeats=5):
        super().__init__(repeats)
        self.replies = list(replies)
        self.prompts = []

    def complete(self, prompt):
        self.prompts.append(prompt)
        return self.replies.pop(0)


@pytest.mark.parametrize(
    ("reply", "allowed", "expected"),
    [
        ("Score: 1", (0, 1), 1),
        ("**Score:** 2", (0, 1, 2), 2),
        ("score=0", (0, 1, 2), 0),
        ("The result is 1", (0, 1), 1),
        ("Score: 3", (0, 1, 2), 0),  # out of range counts as 0, like the official script
        ("I cannot decide.", (0, 1), 0),
        ("Score: 2 (of 2)", (0, 1, 2), 2),
    ],
)
def test_parse_judge_score(reply, allowed, expected):
    assert parse_judge_score(reply, allowed) == expected


def test_mcq_is_the_majority_of_five_votes():
    assert (
        ScriptedJudge(["Score: 1", "Score: 0", "Score: 1", "Score: 0", "Score: 1"]).score(
            "MCQ", "q", "A.x; B.y", "A", "A"
        )
        == 1.0
    )
    assert (
        ScriptedJudge(["Score: 1", "Score: 0", "Score: 0", "nonsense", "Score: 1"]).score(
            "MCQ", "q", "A.x; B.y", "A", "B"
        )
        == 0.0
    )


def test_vqa_sums_five_grades_over_ten():
    judge = ScriptedJudge(["Score: 2", "Score: 1", "Score: 0", "Score: 2", "Score: 2"])
    assert judge.score("VQA", "What color is the car", None, "red", "A red car") == pytest.approx(0.7)
    assert "What color is the car" in judge.prompts[0] and "Correct answer: red" in judge.prompts[0]
    assert "Response: A red car" in judge.prompts[0]


def test_captions_are_graded_once_per_reference():
    judge = ScriptedJudge(["Score: 2", "Score: 1", "Score: 0"])
    captions = ["A cat on a mat.", "A sleeping cat.", "A pet indoors."]
    assert judge.score("CAP", "describe", None, captions, "A cat sleeps on a mat.") == pytest.approx(3 / 6)
    assert [caption in prompt for caption, prompt in zip(captions, judge.prompts, strict=True)] == [True, True, True]
    # Against one reference text (the clean-image caption) it is five grades over ten, as in the official script.
    single = ScriptedJudge(["Score: 2", "Score: 2", "Score: 1", "Score: 0", "Score: 2"])
    assert single.score("CAP", "describe", None, "A cat.", "A cat.") == pytest.approx(0.7)


def test_scoring_rejects_unknown_tasks_and_bad_repeats():
    with pytest.raises(ValueError, match="Unknown R-Bench task"):
        ScriptedJudge([]).score("OCR", "q", None, "a", "a")
    with pytest.raises(ValueError, match="repeats"):
        ScriptedJudge([], repeats=0)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "test-key")
    return "TEST_JUDGE_KEY"


def make_judge(server, api_key, **kwargs):
    return OpenAICompatibleJudge(
        f"http://127.0.0.1:{server.server_port}/v1/",
        "judge-model",
        api_key_env=api_key,
        backoff=0.0,
        timeout=5.0,
        **kwargs,
    )


def test_http_judge_retries_a_server_error(judge_server, api_key):
    judge_server.script = [(500, {"error": "overloaded"}), (200, chat_reply("Score: 2"))]
    judge = make_judge(judge_server, api_key, temperature=0.0)
    assert judge.complete("Grade this.") == "Score: 2"
    assert len(judge_server.requests) == 2
    request = judge_server.requests[-1]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer test-key"
    assert request["body"]["model"] == "judge-model"
    assert request["body"]["temperature"] == 0.0
    assert [message["role"] for message in request["body"]["messages"]] == ["system", "user"]
    assert request["body"]["messages"][1]["content"] == "Grade this."


def test_http_judge_scores_an_item_with_five_calls(judge_server, api_key):
    judge_server.script = [(200, chat_reply(f"Score: {vote}")) for vote in (1, 1, 0, 1, 0)]
    judge = make_judge(judge_server, api_key)
    assert judge.score("MCQ", "Which sport?", "A.running; B.tennis", "B", "B. tennis") == 1.0
    assert len(judge_server.requests) == 5
    assert "Which sport?" in judge_server.requests[0]["body"]["messages"][1]["content"]


def test_http_judge_gives_up_after_its_retries(judge_server, api_key):
    judge_server.script = [(503, {"error": "down"})] * 3
    with pytest.raises(JudgeRequestError, match="failed 3 times; last problem: HTTP 503"):
        make_judge(judge_server, api_key, max_retries=2).complete("x")
    assert len(judge_server.requests) == 3


def test_http_judge_does_not_retry_a_client_error(judge_server, api_key):
    judge_server.script = [(401, {"error": "bad key"})]
    with pytest.raises(JudgeRequestError, match="refused the request: HTTP 401"):
        make_judge(judge_server, api_key).complete("x")
    assert len(judge_server.requests) == 1


def test_http_judge_retries_connection_errors(api_key):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    judge = OpenAICompatibleJudge(
        f"http://127.0.0.1:{closed_port}/v1", "m", api_key_env=api_key, backoff=0.0, max_retries=1
    )
    with pytest.raises(JudgeRequestError, match=r"failed 2 times; last problem: cannot connect \(.*Connection refused\)"):
        judge.complete("x")


def test_http_judge_needs_its_api_key(monkeypatch, judge_server):
    monkeypatch.delenv("MISSING_JUDGE_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="MISSING_JUDGE_KEY"):
        OpenAICompatibleJudge("http://127.0.0.1:1/v1", "m", api_key_env="MISSING_JUDGE_KEY")
    # A server without authentication: no key, no Authorization header.
    judge = OpenAICompatibleJudge(f"http://127.0.0.1:{judge_server.server_port}/v1", "m", api_key_env=None)
    assert judge.complete("x") == "Score: 1"
    assert judge_server.requests[0]["auth"] is None


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "[EOS]", "Score:", "0", "1", "2", "the", "answer", "is", "correct"]
    backend = Tokenizer(models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    tokenizer.chat_template = "{% for message in messages %}{{ message['content'] }} {% endfor %}"
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=1,
        eos_token_id=2,
        bos_token_id=2,
    )
    path = tmp_path_factory.mktemp("tiny-judge")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_transformers_judge_loads_lazily_and_generates(tiny_causal_lm, tmp_path):
    TransformersJudge(tmp_path / "does-not-exist")  # nothing is loaded at construction
    judge = TransformersJudge(str(tiny_causal_lm), max_new_tokens=4, device="cpu")
    reply = judge.complete("Score: 1 is the answer")
    assert isinstance(reply, str) and len(reply.split()) <= 4
    assert judge.score("VQA", "What color", None, "red", "red") in {0.0, 0.5, 1.0}
    assert judge.repeats == 1 and judge.name.startswith("transformers:")
    with pytest.raises(OSError):
        TransformersJudge(str(tmp_path / "does-not-exist")).complete("x")
