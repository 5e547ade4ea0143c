"""Judges that score R-Bench replies the way the official R-Bench script does.

Scoring rules (Q-Future/R-Bench, ``R-Bench-Script.ipynb``), for a judge making ``repeats`` calls:

- **MCQ**: each call rates the reply 0/1; the item scores the majority, ``int(sum / repeats + 0.5)``.
- **VQA**: each call rates 0/1/2; the item scores ``sum / (2 · repeats)``.
- **CAP** against the list of reference captions: one call per caption, 0/1/2 each, ``sum / (2n)``;
  against a single reference text (the clean-image caption, for relative robustness) it is scored
  like VQA, as the official script does.

A judge reply that carries no valid score counts 0, as in the official script; a failing judge
(network, HTTP) raises instead of silently scoring 0. The prompts below are this library's wording of
the official grading criteria.
"""

from __future__ import annotations

import abc
import math
import os
import re
import time
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import requests

from .options import extract_option, parse_choice_string

RBenchTask = Literal["MCQ", "VQA", "CAP"]
RBENCH_TASKS: tuple[RBenchTask, ...] = ("MCQ", "VQA", "CAP")

JUDGE_SYSTEM_PROMPT = "You are a helpful assistant."

MCQ_JUDGE_PROMPT = """You are grading a respondent's answer to a multiple-choice question.
Question: {question}
Options: {choices}
Correct option: {reference}
Respondent's answer: {response}
The respondent may give the option letter, the option text, or a close paraphrase of it. Decide whether the respondent chose the correct option.
Reply 1 if the answer is correct and 0 otherwise, using exactly this format: Score: <0 or 1>"""

VQA_JUDGE_PROMPT = """You are grading a short answer to a question about an image.
Question: {question}
Correct answer: {reference}
Response: {response}
Rate how well the response matches the correct answer in completeness, accuracy and relevance:
2 = it matches completely or almost completely;
1 = it matches partly;
0 = it does not match at all, or it is not a valid answer.
Reply using exactly this format: Score: <0, 1 or 2>"""

CAP_JUDGE_PROMPT = """You are grading an image description against a reference description of the same image.
Reference description: {reference}
Description to grade: {response}
Rate how well the description matches the reference in completeness, accuracy and relevance:
2 = it matches completely or almost completely;
1 = it matches partly;
0 = it does not match at all, or it is not a valid description.
Reply using exactly this format: Score: <0, 1 or 2>"""

_SCORE_AFTER_LABEL = re.compile(r"score\s*[:=]?\s*\**\s*([0-9])", re.IGNORECASE)
_DIGIT = re.compile(r"(?<![0-9.])([0-9])(?![0-9.])")


class MissingAPIKeyError(RuntimeError):
    """The environment variable that should hold the judge's API key is not set."""


class JudgeRequestError(RuntimeError):
    """The judge endpoint kept failing after all retries, or refused the request."""


@runtime_checkable
class Judge(Protocol):
    """Scores one R-Bench reply; ``reference`` is the ground truth (a caption list for CAP) or the clean-image reply.

    A judge may also define ``check() -> None``, raising when it cannot score (unreachable endpoint, missing
    model); :func:`~robust_u1.evaluation.evaluate_benchmark` calls it before computing any answer.
    """

    name: str
    tasks: tuple[RBenchTask, ...]

    def score(
        self, task: RBenchTask, question: str, choices: str | None, reference: str | Sequence[str], response: str
    ) -> float: ...


def parse_judge_score(reply: str, allowed: Sequence[int]) -> int:
    """The score in a judge reply (``Score: 2``), else its last lone digit; 0 when neither is allowed.

    Example:
        >>> parse_judge_score("Score: 2", allowed=(0, 1, 2))
        2
        >>> parse_judge_score("I would give it a 5", allowed=(0, 1, 2))
        0
    """
    labelled = _SCORE_AFTER_LABEL.findall(reply)
    candidates = labelled or _DIGIT.findall(reply)
    if candidates and int(candidates[-1]) in allowed:
        return int(candidates[-1])
    return 0


class ChatJudge(abc.ABC):
    """A judge backed by a text-completion function; subclasses implement :meth:`complete`."""

    tasks: tuple[RBenchTask, ...] = RBENCH_TASKS
    max_concurrency: int | None = None
    """How many :meth:`complete` calls may run at once (``None``: no limit)."""

    def __init__(self, repeats: int = 5) -> None:
        if repeats < 1:
            raise ValueError("repeats must be at least 1.")
        self.repeats = repeats

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Identifies the judge in the score cache (changing judges re-scores)."""

    @abc.abstractmethod
    def complete(self, prompt: str) -> str:
        """The judge model's reply to one grading prompt."""

    def score(
        self, task: RBenchTask, question: str, choices: str | None, reference: str | Sequence[str], response: str
    ) -> float:
        """Score one reply with R-Bench's rules (see the module docstring)."""
        if task == "MCQ":
            prompt = MCQ_JUDGE_PROMPT.format(question=question, choices=choices, reference=reference, response=response)
            votes = sum(parse_judge_score(self.complete(prompt), (0, 1)) for _ in range(self.repeats))
            return float(int(votes / self.repeats + 0.5))
        if task == "VQA":
            prompt = VQA_JUDGE_PROMPT.format(question=question, reference=reference, response=response)
            return self._graded(prompt, self.repeats)
        if task == "CAP":
            if isinstance(reference, str):
                return self._graded(CAP_JUDGE_PROMPT.format(reference=reference, response=response), self.repeats)
            if not reference:
                raise ValueError("A CAP item needs at least one reference caption.")
            total = sum(
                parse_judge_score(
                    self.complete(CAP_JUDGE_PROMPT.format(reference=caption, response=response)), (0, 1, 2)
                )
                for caption in reference
            )
            return total / (2 * len(reference))
        raise ValueError(f"Unknown R-Bench task {task!r}; expected one of {RBENCH_TASKS}.")

    def _graded(self, prompt: str, calls: int) -> float:
        return sum(parse_judge_score(self.complete(prompt), (0, 1, 2)) for _ in range(calls)) / (2 * calls)


class OpenAICompatibleJudge(ChatJudge):
    """A judge behind any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, TGI, …).

    The API key is read from ``api_key_env`` when the judge is created (``api_key_env=None`` for
    servers without authentication). Each request waits at most ``timeout`` seconds; connection
    errors, timeouts, HTTP 429 and 5xx are retried ``max_retries`` times with exponential back-off;
    other HTTP errors raise at once. :meth:`check` sends one 1-token request, so an unreachable judge,
    a bad key or an unknown model is reported before any answer is computed.
    ``temperature=None`` leaves the server's default sampling, under which R-Bench's repeated calls
    differ; with greedy decoding use ``repeats=1``.

    Example:
        >>> judge = OpenAICompatibleJudge("https://api.openai.com/v1", "gpt-4o-mini")  # doctest: +SKIP
        >>> judge.score("VQA", "What color is the car", None, "red", "A red car.")  # doctest: +SKIP
        1.0
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        *,
        repeats: int = 5,
        timeout: float = 60.0,
        max_retries: int = 2,
        backoff: float = 1.0,
        temperature: float | None = None,
        max_tokens: int = 32,
        system_prompt: str = JUDGE_SYSTEM_PROMPT,
    ) -> None:
        super().__init__(repeats)
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"The judge timeout must be a positive number of seconds, got {timeout!r}.")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"The judge's max_retries must be an integer >= 0, got {max_retries!r}.")
        if not re.match(r"https?://[^/\s]+", base_url or ""):
            raise ValueError(f"The judge URL must start with http:// or https://, got {base_url!r}.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self._session = requests.Session()
        if api_key_env is not None:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise MissingAPIKeyError(
                    f"The judge needs an API key in the environment variable {api_key_env}; set it "
                    f"(export {api_key_env}=...) or pass api_key_env=None for a server without authentication."
                )
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    @property
    def name(self) -> str:
        return f"openai-compatible:{self.model}@{self.url}:repeats={self.repeats}"

    def check(self) -> None:
        """Send one 1-token request; raise :class:`JudgeRequestError` when the judge cannot answer.

        Example:
            >>> OpenAICompatibleJudge("http://localhost:8000/v1", "judge", api_key_env=None).check()  # doctest: +SKIP
        """
        self.complete("Reply with: Score: 1", max_tokens=1)

    def complete(self, prompt: str, *, max_tokens: int | None = None) -> str:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}],
            "max_tokens": max_tokens or self.max_tokens,
        }
        if self.temperature is not None:
            payload["temperature"] = self.temperature
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._session.post(self.url, json=payload, timeout=self.timeout)
            except requests.Timeout:
                last_problem = f"no reply within {self.timeout:g} s (raise the timeout if the judge is slow)"
                continue
            except requests.ConnectionError as error:
                last_problem = f"cannot connect ({_root_cause(error)})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last_problem = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                hint = " (check the API key)" if response.status_code in (401, 403) else ""
                raise JudgeRequestError(
                    f"The judge at {self.url} refused the request: HTTP {response.status_code}{hint}: "
                    f"{_one_line(response.text, 300)}"
                )
            try:
                return response.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as error:
                raise JudgeRequestError(
                    f"The judge at {self.url} returned an unexpected body: {_one_line(response.text, 300)}"
                ) from error
        raise JudgeRequestError(
            f"The judge at {self.url} failed {self.max_retries + 1} times; last problem: {last_problem}"
        )


def _one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def _root_cause(error: BaseException) -> str:
    """The innermost reason of a requests error ("Connection refused"), not its nested repr."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    reason = str(error).rsplit(": ", 1)[-1].strip("')\" ") if str(error) else type(error).__name__
    return _one_line(reason, 200)


class TransformersJudge(ChatJudge):
    """A local transformers causal LM as judge, loaded on first use (``model_or_path`` may be a loaded model).

    Decoding is greedy by default, so the R-Bench repeats would be identical: ``repeats`` defaults to 1
    (the same expected score with a fifth of the calls). Pass ``do_sample=True, repeats=5`` to sample.

    Example:
        >>> judge = TransformersJudge("Qwen/Qwen2.5-7B-Instruct")  # nothing is loaded yet  # doctest: +SKIP
        >>> judge.complete("Reply with: Score: 1")  # doctest: +SKIP
        'Score: 1'
    """

    max_concurrency = 1  # one model instance: generate calls are serialised

    def __init__(
        self,
        model_or_path: Any,
        *,
        tokenizer: Any = None,
        repeats: int = 1,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        device: str | None = None,
        dtype: str = "auto",
        system_prompt: str = JUDGE_SYSTEM_PROMPT,
    ) -> None:
        super().__init__(repeats)
        self._model_or_path = model_or_path
        self._model = None if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
        self._tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.device = device
        self.dtype = dtype
        self.system_prompt = system_prompt

    @property
    def name(self) -> str:
        source = (
            self._model_or_path
            if isinstance(self._model_or_path, (str, os.PathLike))
            else type(self._model_or_path).__name__
        )
        return f"transformers:{source}:sample={self.do_sample}:repeats={self.repeats}"

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self._model is None:
            self._model = AutoModelForCausalLM.from_pretrained(self._model_or_path, dtype=self.dtype)
            if self.device is not None:
                self._model.to(self.device)
            self._model.eval()
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(
                self._model_or_path if isinstance(self._model_or_path, (str, os.PathLike)) else self._model.name_or_path
            )
        return self._model, self._tokenizer

    def check(self) -> None:
        """Resolve the judge model's configuration (cheap; no weights loaded) so a bad path fails early.

        Example:
            >>> TransformersJudge("./no-such-judge").check()  # doctest: +SKIP
            Traceback (most recent call last):
            FileNotFoundError: The judge model folder ./no-such-judge does not exist.
        """
        if self._model is not None:
            return
        from transformers import AutoConfig

        source = str(self._model_or_path)
        looks_local = source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep in source.replace("/", "")
        if looks_local and not os.path.isdir(os.path.expanduser(source)):
            raise FileNotFoundError(f"The judge model folder {source} does not exist.")
        try:
            AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise JudgeRequestError(f"The judge model {source} cannot be loaded: {_one_line(str(error), 300)}") from error

    def complete(self, prompt: str) -> str:
        import torch

        model, tokenizer = self._load()
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}]
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(model.device)
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=self.do_sample,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


class ExactMatchJudge:
    """Scores MCQ replies by option extraction (no LLM); refuses VQA and CAP, which need a judge model.

    The reference may be the correct letter or the clean-image reply; both sides go through
    :func:`~robust_u1.evaluation.options.extract_option`.

    Example:
        >>> ExactMatchJudge().score("MCQ", "Which animal?", "A.dog; B.cat", "B", "It is B.")
        1.0
    """

    name = "exact-match"
    tasks: tuple[RBenchTask, ...] = ("MCQ",)

    def score(
        self, task: RBenchTask, question: str, choices: str | None, reference: str | Sequence[str], response: str
    ) -> float:
        if task != "MCQ":
            raise ValueError(
                f"ExactMatchJudge only scores MCQ items, not {task}; use OpenAICompatibleJudge or "
                "TransformersJudge for VQA and CAP (or restrict R-Bench to tasks=('MCQ',))."
            )
        options = parse_choice_string(choices)
        expected = extract_option(str(reference), options)
        return float(expected is not None and extract_option(response, options) == expected)
