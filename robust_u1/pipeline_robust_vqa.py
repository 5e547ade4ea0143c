"""``pipeline("robust-vqa")``: recover the corrupted image, then answer over [I_c, I_r, Q]."""

from __future__ import annotations

from typing import Any

from transformers import Pipeline


class RobustVQAPipeline(Pipeline):
    """Robust visual question answering with self-recovery (registered on ``import robust_u1``).

    Inputs are ``{"image": ..., "question": ..., "options": [...]}`` dicts (``options`` optional), or a
    list of them. Keyword arguments go to `RobustU1ForConditionalGeneration.answer` (``recover``,
    ``think``, ``max_new_tokens``, ``do_sample``, ``temperature``…) and ``recover_kwargs`` to `recover`.

    Example:
        >>> import robust_u1
        >>> from transformers import pipeline
        >>> vqa = pipeline("robust-vqa", model="Jiaqi-hkust/Robust-U1")
        >>> vqa({"image": "corrupted.png", "question": "What animal is shown?", "options": ["dog", "cat"]})
        {'answer': 'B', 'option': 'B', 'reasoning': None, 'recovered_image': <PIL.Image.Image ...>}
    """

    _load_processor = False
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    ANSWER_ARGUMENTS = (
        "recover", "return_recovered", "think", "max_new_tokens", "do_sample", "temperature", "top_p", "top_k",
        "recover_kwargs", "generator",
    )  # fmt: skip

    def __init__(self, *args, processor=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.robust_processor = processor or getattr(self.model, "processor", None)
        if self.robust_processor is None:
            raise ValueError(
                "The robust-vqa pipeline needs the model's processor: load a checkpoint that contains one, "
                "or pass `processor=RobustU1Processor.from_pretrained(...)`."
            )

    def _sanitize_parameters(self, **kwargs):
        unknown = sorted(set(kwargs) - set(self.ANSWER_ARGUMENTS))
        if unknown:
            raise TypeError(f"Unknown robust-vqa arguments {unknown}; supported: {', '.join(self.ANSWER_ARGUMENTS)}.")
        return {}, dict(kwargs), {}

    def preprocess(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(inputs, dict) or "image" not in inputs or "question" not in inputs:
            raise ValueError('robust-vqa inputs are dicts with "image" and "question" (and optional "options").')
        return {"image": inputs["image"], "question": inputs["question"], "options": inputs.get("options")}

    def _forward(self, model_inputs: dict[str, Any], **answer_kwargs) -> dict[str, Any]:
        result = self.model.answer(
            model_inputs["image"], model_inputs["question"], model_inputs["options"],
            processor=self.robust_processor, **answer_kwargs,
        )  # fmt: skip
        return {"result": result}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        result = model_outputs["result"]
        return {
            "answer": result.answer,
            "option": result.option,
            "reasoning": result.reasoning,
            "recovered_image": result.recovered_image,
        }
