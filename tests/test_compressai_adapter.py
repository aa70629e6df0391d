"""What the codec relies on from CompressAI's private entropy-model internals, pinned through
geocompress.codec.compressai_adapter: a CompressAI upgrade that changes one fails here first."""

import math

import pytest
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from geocompress.codec import compressai_adapter as cai

C = 4


@pytest.fixture()
def eb() -> EntropyBottleneck:
    torch.manual_seed(0)
    eb = EntropyBottleneck(C)
    with torch.no_grad():  # a density that is not the initial one: quantiles and filters moved
        for p in eb.parameters():
            p.add_(0.1 * torch.randn_like(p))
    eb.update(force=True)
    return eb.eval()


def _direct_logits(eb: EntropyBottleneck, x: torch.Tensor) -> torch.Tensor:
    """Ballé et al. 2018's cumulative density (Appendix 6.1), written out from the parameters."""
    n = len(eb.filters)
    for i in range(n + 1):
        x = torch.matmul(torch.nn.functional.softplus(eb.matrices[i]), x) + eb.biases[i]
        if i < n:
            x = x + torch.tanh(eb.factors[i]) * torch.tanh(x)
    return x


def test_medians_are_the_quantiles_middle_column(eb):
    med = cai.bottleneck_medians(eb)
    assert med.shape == (C, 1, 1)
    assert torch.equal(med, eb.quantiles[:, :, 1:2])
    fresh = EntropyBottleneck(C)
    assert torch.equal(cai.bottleneck_medians(fresh), torch.zeros(C, 1, 1))


def test_medians_carry_gradients(eb):
    cai.bottleneck_medians(eb).sum().backward()
    assert eb.quantiles.grad is not None and eb.quantiles.grad[:, :, 1].eq(1).all()


def test_bottleneck_indexes_are_channels():
    idx = cai.bottleneck_indexes((2, 3, 4, 5))
    assert idx.dtype == torch.int32 and idx.shape == (2, 3, 4, 5)
    assert torch.equal(idx, torch.arange(3, dtype=torch.int32).view(1, 3, 1, 1).expand(2, 3, 4, 5))


def test_logits_cumulative_is_the_papers_density_and_monotone(eb):
    x = torch.linspace(-20, 20, 401).repeat(C, 1, 1)
    logits = cai.logits_cumulative(eb, x, stop_gradient=True)
    assert logits.shape == x.shape
    torch.testing.assert_close(logits, _direct_logits(eb, x), rtol=0, atol=1e-5)
    assert (logits.diff(dim=-1) >= 0).all()


def test_logits_cumulative_stop_gradient(eb):
    x = torch.zeros(C, 1, 3, requires_grad=True)
    cai.logits_cumulative(eb, x, stop_gradient=True).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in eb.matrices)
    cai.logits_cumulative(eb, x, stop_gradient=False).sum().backward()
    assert all(p.grad is not None for p in eb.matrices)


def test_bottleneck_likelihood_is_the_mass_of_the_unit_interval(eb):
    v = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0]).repeat(C, 1, 1)
    lik = cai.bottleneck_likelihood(eb, v)
    direct = (torch.sigmoid(_direct_logits(eb, v + 0.5))
              - torch.sigmoid(_direct_logits(eb, v - 0.5)))
    assert lik.shape == v.shape
    torch.testing.assert_close(lik, direct, rtol=0, atol=1e-6)
    assert ((lik > 0) & (lik <= 1)).all()
    # no lower bound applied: the caller applies it
    far = torch.full((C, 1, 1), 1e4)
    assert (cai.bottleneck_likelihood(eb, far) < 1e-9).all()


def test_bottleneck_likelihood_matches_forward(eb):
    """The forward pass's likelihoods (eval: rounded around the medians) are the adapter's,
    bounded: the rate the refinement computes is the one training optimised."""
    torch.manual_seed(1)
    x = 3 * torch.randn(2, C, 3, 3)
    x_hat, lik = eb(x, training=False)
    values = x_hat.transpose(0, 1).reshape(C, 1, -1)
    mine = eb.likelihood_lower_bound(cai.bottleneck_likelihood(eb, values))
    torch.testing.assert_close(mine.reshape(C, 2, 3, 3).transpose(0, 1), lik)


def test_gaussian_likelihood_is_the_normal_mass():
    gc = GaussianConditional(None)
    v = torch.tensor([[0.0, 1.0, -2.0, 3.0]])
    means = torch.tensor([[0.2, 0.0, -1.5, 10.0]])
    scales = torch.tensor([[1.0, 0.5, 2.0, 0.01]])  # the last below the 0.11 lower bound
    lik = cai.gaussian_likelihood(gc, v, scales, means)
    s = scales.clamp_min(0.11)
    d = (v - means).abs()
    phi = lambda t: 0.5 * (1 + torch.erf(t / math.sqrt(2)))  # noqa: E731
    torch.testing.assert_close(lik, phi((0.5 - d) / s) - phi((-0.5 - d) / s), rtol=0, atol=1e-6)
    zero_mean = cai.gaussian_likelihood(gc, v, scales)
    torch.testing.assert_close(zero_mean, cai.gaussian_likelihood(gc, v, scales, torch.zeros_like(v)))


def test_cdf_tables_are_the_stored_buffers(eb):
    cdf, length, offset = cai.cdf_tables(eb)
    state = eb.state_dict()
    for name, t in zip(("_quantized_cdf", "_cdf_length", "_offset"), (cdf, length, offset)):
        assert name in cai.CDF_BUFFERS and torch.equal(state[name], t)
    assert set(cai.CDF_BUFFERS) <= set(state)
    assert cdf.shape[0] == length.shape[0] == offset.shape[0] == C == cai.table_rows(eb)
    assert (length <= cdf.shape[1]).all()
    gc = GaussianConditional(None)
    gc.update_scale_table(torch.exp(torch.linspace(math.log(0.11), math.log(256), 64)))
    gc.update()
    assert cai.table_rows(gc) == 64


def test_bottleneck_decompress_is_compressai_decompress_in_any_dtype(eb):
    torch.manual_seed(2)
    z = 2 * torch.randn(3, C, 4, 4)
    strings = eb.compress(z)
    ref = eb.decompress(strings, (4, 4))
    med = cai.bottleneck_medians(eb).detach().reshape(1, C, 1, 1).expand(3, C, 4, 4)
    out = cai.bottleneck_decompress(eb, strings, (4, 4), torch.float32, med)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out64 = cai.bottleneck_decompress(eb, strings, (4, 4), torch.float64, med.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), ref, rtol=0, atol=1e-6)


def test_resize_cdf_buffers_loads_tables_of_another_length(eb):
    other = EntropyBottleneck(C)
    other.update(force=True)
    state = {f"entropy_bottleneck.{k}": v for k, v in eb.state_dict().items()}
    assert other.quantized_cdf.shape != eb.quantized_cdf.shape
    cai.resize_cdf_buffers(other, state, "entropy_bottleneck.")
    assert other.quantized_cdf.shape == eb.quantized_cdf.shape
    other.load_state_dict(eb.state_dict())
    assert torch.equal(other.quantized_cdf, eb.quantized_cdf)
