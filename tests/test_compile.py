"""Regional compilation of the denoiser (`compile_repeated_blocks`): same outputs, no recompilation per step or call."""

import pytest
import torch
from PIL import Image

from robust_u1.tiny import tiny_random_model

pytestmark = pytest.mark.usefixtures("single_thread")
KWARGS = dict(prompt=[5, 6, 7], num_inference_steps=6, output_type="latent", progress=False, sample_posterior=False)


def _cpp_compiler_missing() -> str | None:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as error:  # no g++/clang++ (or CXX): inductor cannot build CPU kernels
        return f"torch.compile's inductor backend needs a C++ compiler on CPU: {error}"
    return None


needs_inductor = pytest.mark.skipif(_cpp_compiler_missing() is not None, reason=str(_cpp_compiler_missing()))


def recover(model, size, **kwargs):
    image = Image.new("RGB", size, (120, 80, 40))
    return model.recover(image, generator=torch.Generator().manual_seed(0), **{**KWARGS, **kwargs})


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@needs_inductor
def test_compiled_denoiser_matches_eager_and_does_not_recompile():
    torch._dynamo.reset()
    model, _ = tiny_random_model(seed=0)
    eager = recover(model, (32, 32))
    eager_taylorseer = recover(model, (32, 32), enable_taylorseer=True, num_inference_steps=12)

    model.compile_repeated_blocks()
    before = compiled_graphs()
    compiled = recover(model, (32, 32))
    assert compiled_graphs() - before == 1, "one graph serves both layers and every step"
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    with torch._dynamo.config.patch(error_on_recompile=True):  # same size again, and TaylorSeer's full steps
        assert torch.equal(recover(model, (32, 32)), compiled)
        taylorseer = recover(model, (32, 32), enable_taylorseer=True, num_inference_steps=12)
    torch.testing.assert_close(taylorseer, eager_taylorseer, atol=1e-5, rtol=1e-5)

    model.language_model.model.compiled_layers = None  # back to eager: bit-identical to before
    assert torch.equal(recover(model, (32, 32)), eager)


@pytest.mark.slow
@needs_inductor
def test_a_new_size_recompiles_once_then_shapes_are_dynamic():
    torch._dynamo.reset()
    model, _ = tiny_random_model(seed=0)
    model.compile_repeated_blocks()
    recover(model, (32, 32))
    before = compiled_graphs()
    recover(model, (48, 32))
    assert compiled_graphs() - before == 1
    with torch._dynamo.config.patch(error_on_recompile=True):
        eager_layers_result = recover(model, (64, 32))
    model.language_model.model.compiled_layers = None
    torch.testing.assert_close(eager_layers_result, recover(model, (64, 32)), atol=1e-5, rtol=1e-5)


def test_missing_cpp_compiler_is_reported_before_any_work(monkeypatch):
    import torch._inductor.cpp_builder as cpp_builder

    def no_compiler():
        raise RuntimeError("No working C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    model, _ = tiny_random_model(seed=0)
    with pytest.raises(RuntimeError, match=r"inductor backend needs a C\+\+ compiler on CPU and found none .*apt-get install g\+\+"):
        model.compile_repeated_blocks()
    assert model.language_model.model.compiled_layers is None
    model.compile_repeated_blocks(backend="aot_eager")  # no C++ needed
    assert len(model.language_model.model.compiled_layers) == len(model.language_model.model.layers)
