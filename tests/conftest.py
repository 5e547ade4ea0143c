import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py


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


@pytest.fixture(scope="session")
def fitted_tiny_vae_state():
    """A tiny VAE state dict fitted once to reconstruct the shapes images of `helpers.noisy_pairs(12)`."""
    from helpers import fit_vae, shapes_image

    from robust_u1.tiny import tiny_random_model

    torch.manual_seed(0)
    model, processor = tiny_random_model(seed=0)
    fit_vae(model, processor, [shapes_image(i) for i in range(12)])
    return {k: v.clone() for k, v in model.vae.state_dict().items()}


@pytest.fixture
def tiny_model_with_fitted_vae(fitted_tiny_vae_state):
    from robust_u1.tiny import tiny_random_model

    model, processor = tiny_random_model(seed=0)
    model.vae.load_state_dict(fitted_tiny_vae_state)
    return model, processor


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


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures("single_thread")``):
    on tiny tensors thread hand-offs cost more than the work, and on a busy 2-core machine OpenMP's
    spinning threads make a recovery call ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ScriptedHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        from helpers import chat_reply

        status, payload = self.server.script.pop(0) if self.server.script else (200, chat_reply("Score: 1"))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    """An OpenAI-compatible chat endpoint on 127.0.0.1 answering `server.script`'s (status, payload) in turn, then 200."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    server.script, server.requests = [], []
    server.url = f"http://127.0.0.1:{server.server_port}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()
