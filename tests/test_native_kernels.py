"""The native training kernels (depthwise weight gradient, SSIF-AM's max pooling) give PyTorch's
gradients, on odd sizes, ties and channel counts off the vector width, for any thread count; and
training falls back to PyTorch's kernels where they cannot be built."""

from __future__ import annotations

import copy

import pytest
import torch

from geocompress.models import build
from geocompress.models.blocks import SSIFAM
from geocompress.training import depthwise, native, ssif_pool
from geocompress.training.mixed_precision import prepare_layers

pytestmark = pytest.mark.skipif(native.load("depthwise_grad") is None or native.load("ssif_pool") is None,
                                reason="no C compiler: the native kernels are optional")


def _grads(module: torch.nn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.clone().requires_grad_()
    module.zero_grad()
    (module(x) * g).sum().backward()
    return [x.grad] + [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("kernel", [(5, 5), (1, 9), (9, 1), (1, 7), (3, 5), (3, 3)])
@pytest.mark.parametrize("channels", [16, 24])
def test_depthwise_weight_gradient_matches_pytorch(kernel, channels) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2),
                           groups=channels)
    assert depthwise.eligible(conv)
    fast = copy.deepcopy(conv)
    prepare_layers(fast, "cpu", amp=False)
    x = torch.randn(3, channels, 11, 13).contiguous(memory_format=torch.channels_last)
    g = torch.randn(3, channels, 11, 13)
    for a, b in zip(_grads(conv, x, g), _grads(fast, x, g)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_strided_or_dense_convolutions_keep_pytorch_s_kernel() -> None:
    assert not depthwise.eligible(torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8))
    assert not depthwise.eligible(torch.nn.Conv2d(8, 8, 3, padding=1))
    assert not depthwise.eligible(torch.nn.Conv2d(8, 8, 3, padding=0, groups=8))
    assert ssif_pool.eligible(SSIFAM(8))
    assert not ssif_pool.eligible(SSIFAM(8, pool=5))


def test_pooling_terms_values_and_gradients_match_pytorch_with_ties() -> None:
    torch.manual_seed(1)
    block = SSIFAM(20)
    x = torch.randn(2, 20, 9, 7).contiguous(memory_format=torch.channels_last)
    x[:, :, :4, :4] = 0.5          # plateaus: ties go to the window's first maximum, as in PyTorch
    x[1, 3, :, :3] = -1e30         # a window of equal, very negative values
    g = torch.randn(2, 20, 9, 7)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = SSIFAM.pools(block, xa), ssif_pool.pools(block, xb)
    assert yb.grad_fn is not None and "Pools" in type(yb.grad_fn).__name__
    torch.testing.assert_close(yb, ya, rtol=1e-6, atol=1e-5)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)


def test_ssif_block_trains_identically_with_native_kernels_in_any_thread_count() -> None:
    torch.manual_seed(2)
    block = SSIFAM(32)
    torch.nn.init.normal_(block.fuse.weight, std=0.1)
    fast = copy.deepcopy(block)
    prepare_layers(fast, "cpu", amp=False)
    x = torch.randn(2, 32, 17, 19).contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    ref = _grads(block, x, g)
    threads = torch.get_num_threads()
    try:
        per_count = []
        for n in (1, 2):
            torch.set_num_threads(n)
            per_count.append(_grads(fast, x, g))
    finally:
        torch.set_num_threads(threads)
    names = ["x"] + [n for n, _ in fast.named_parameters()]
    for name, a, b, c in zip(names, ref, *per_count):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        if name.startswith(("local", "strips")):  # the native kernel's sums, in a fixed order
            assert torch.equal(b, c), name


def test_mixed_precision_model_step_matches_without_native_kernels(monkeypatch) -> None:
    """The whole prepared MGSSNet (bf16 autocast per layer) against the same model on PyTorch's
    kernels (GEOCOMPRESS_NATIVE=0): the same loss and nearly the same gradients."""
    torch.manual_seed(3)
    model = build("mgssnet", N=16, M=24).train().to(memory_format=torch.channels_last)
    prepare_layers(model, "cpu", amp=True)
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)

    def step(native_on: bool):
        for f in (native.load, depthwise._kernel, ssif_pool._lib):
            f.cache_clear()
        if native_on:
            monkeypatch.delenv("GEOCOMPRESS_NATIVE", raising=False)
        else:
            monkeypatch.setenv("GEOCOMPRESS_NATIVE", "0")
        assert (depthwise._kernel() is not None) == native_on
        model.zero_grad()
        torch.manual_seed(4)  # the same noise in the quantization proxy
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        rate = sum(p.log().mean() for p in out["likelihoods"].values())
        loss = ((out["x_hat"].float() - x) ** 2).mean() + rate
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    (l_native, g_native), (l_plain, g_plain) = step(True), step(False)
    step(True)  # leave the caches as other tests expect
    assert l_native == pytest.approx(l_plain, rel=1e-5)
    assert torch.nn.functional.cosine_similarity(g_native, g_plain, dim=0) > 0.999


def test_a_failed_build_falls_back_to_pytorch(monkeypatch, tmp_path) -> None:
    """No usable compiler (or cache folder): the kernels are None, never an error in training."""
    monkeypatch.setenv("GEOCOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    native.load.cache_clear()
    try:
        assert native.load("depthwise_grad") is None
    finally:
        native.load.cache_clear()


def test_a_copy_of_a_prepared_model_runs_its_own_layers() -> None:
    """The prepared forwards are bound methods: a deep copy must not call the original's layers."""
    torch.manual_seed(5)
    block = SSIFAM(16)
    torch.nn.init.normal_(block.fuse.weight, std=0.1)
    prepare_layers(block, "cpu", amp=True)
    twin = copy.deepcopy(block)
    for p in twin.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 16, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.equal(twin(x), x)  # all-zero gate: the identity
    twin(x).sum().backward()
    assert block.local.weight.grad is None and twin.local.weight.grad is not None


def test_second_order_gradients_are_refused_not_silently_zero() -> None:
    conv = torch.nn.Conv2d(16, 16, 5, padding=2, groups=16)
    prepare_layers(conv, "cpu", amp=False)
    x = torch.randn(1, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    (gw,) = torch.autograd.grad(conv(x).square().sum(), conv.weight, create_graph=True)
    with pytest.raises(RuntimeError):
        (gw.square().sum() + x.sum()).backward()


def test_pooling_kernel_handles_many_channels_and_nan() -> None:
    block = SSIFAM(8)
    x = torch.randn(1, 300, 4, 5).contiguous(memory_format=torch.channels_last)  # > one block of 256
    x[0, 7, 1, 1] = float("nan")
    g = torch.randn(1, 300, 4, 5)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = SSIFAM.pools(block, xa), ssif_pool.pools(block, xb)
    torch.testing.assert_close(yb, ya, rtol=1e-6, atol=1e-5, equal_nan=True)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5, equal_nan=True)
