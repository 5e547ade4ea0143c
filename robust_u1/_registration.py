"""Registers Robust-U1 with transformers' Auto classes and the ``robust-vqa`` pipeline task.

Imported by ``import robust_u1``; it imports only the model-level modules the registrations name.
"""

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_robust_u1 import RobustU1Config
from .modeling_robust_u1 import RobustU1ForConditionalGeneration
from .pipeline_robust_vqa import RobustVQAPipeline
from .processing_robust_u1 import RobustU1ImageProcessor, RobustU1Processor

BUNDLED_MODEL = Path(__file__).parent / "tinyworld" / "checkpoint"
"""The bundled, trained TinyWorld checkpoint (`robust_u1.tinyworld.TINYWORLD_CHECKPOINT`), the pipeline's
default model. Spelled out here so that registering does not import TinyWorld (torch code, datasets)."""

AutoConfig.register(RobustU1Config.model_type, RobustU1Config, exist_ok=True)
AutoModel.register(RobustU1Config, RobustU1ForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(RobustU1Config, RobustU1ForConditionalGeneration, exist_ok=True)
# One implementation serves both of transformers' image backends (it resizes with PIL and returns
# tensors), so neither request falls back with a warning.
AutoImageProcessor.register(
    RobustU1Config, image_processor_classes={"pil": RobustU1ImageProcessor, "torchvision": RobustU1ImageProcessor}, exist_ok=True
)
AutoProcessor.register(RobustU1Config, RobustU1Processor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "robust-vqa",
    pipeline_class=RobustVQAPipeline,
    pt_model=RobustU1ForConditionalGeneration,
    default={"model": (str(BUNDLED_MODEL), None)},  # works offline
    type="multimodal",
)
