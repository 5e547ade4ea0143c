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


def pytest_terminal_summary(terminalreporter):
    """Prints the largest deviation from the official golden tensors, per case group."""
    module = __import__("sys").modules.get("test_parity") or __import__("sys").modules.get("tests.test_parity")
    errors = getattr(module, "OBSERVED_ERRORS", None)
    if not errors:
        return
    groups: dict[str, tuple[float, str]] = {}
    for name, err in errors.items():
        group = name.split("/")[0] if "/" in name else "other"
        if err >= groups.get(group, (-1.0, ""))[0]:
            groups[group] = (err, name)
    terminalreporter.write_sep("-", "parity: max |Δ| against the official golden tensors")
    for group, (err, name) in sorted(groups.items()):
        terminalreporter.write_line(f"{group:>14}: {err:.2e}  ({name})")
