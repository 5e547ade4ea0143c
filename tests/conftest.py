import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The official reference folder: ``ROBUST_U1_PARITY_DIR`` or the bundled bagel-tiny copy."""
    return Path(os.environ.get("ROBUST_U1_PARITY_DIR", FIXTURES / "bagel-tiny"))


@pytest.fixture(scope="session")
def golden(parity_dir):
    from safetensors.torch import load_file

    return load_file(str(parity_dir / "cases.safetensors"))


@pytest.fixture(scope="session")
def parity_model(parity_dir):
    from robust_u1 import RobustU1ForConditionalGeneration

    torch.manual_seed(0)
    return RobustU1ForConditionalGeneration.from_pretrained(parity_dir, dtype=torch.float32).eval()
