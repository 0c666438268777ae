import pytest
import torch
from torch import nn

from cosmos_policy.configuration_cosmos_policy import NoiseConfig
from cosmos_policy.denoiser import CosmosDenoiser
from cosmos_policy.latent_layout import libero_layout
from cosmos_policy.noise_schedule import sampling_sigmas
from cosmos_policy.sampler import get_sampler


class RecordingNet(nn.Module):
    """Stands in for the transformer: records its inputs, returns a constant."""

    def __init__(self, out: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.out = out
        self.calls: list[dict] = []

    def forward(self, hidden_states, timestep, encoder_hidden_states, fps=None, return_dict=False):
        self.calls.append({"hidden_states": hidden_states, "timestep": timestep})
        b, _, t, h, w = hidden_states.shape
        return (torch.full((b, 16, t, h, w), self.out) + self.weight,)


@pytest.mark.parametrize("padding", [False, True])
def test_denoiser_inputs_masks_and_clean_conditioning(padding):
    lay = libero_layout()
    net = RecordingNet()
    den = CosmosDenoiser(net, NoiseConfig(), padding_mask_channel=padding)
    mask = lay.condition_masks(["policy", "world_model", "value"])
    clean = torch.randn(3, 16, 9, 8, 8)
    x = clean + 10 * torch.randn_like(clean)
    out = den(x, torch.tensor(10.0), mask, clean, torch.zeros(3, 4, 8))
    inp = net.calls[-1]["hidden_states"]
    assert inp.shape[1] == 16 + 1 + int(padding)
    assert torch.equal(inp[:, 16], mask[:, :, None, None].float().expand(3, 9, 8, 8))
    if padding:
        assert torch.all(inp[:, 17] == 0)
    # conditioning frames enter clean and come out clean; generated frames are scaled by c_in
    cond = mask[:, None, :, None, None].expand_as(clean)
    assert torch.equal(inp[:, :16][cond], clean[cond])
    assert torch.equal(out[cond], clean[cond])
    assert torch.allclose(inp[:, :16][~cond], (x / 11)[~cond], atol=1e-6)
    ts = net.calls[-1]["timestep"]
    assert ts.shape == (3, 1, 9, 1, 1)
    assert torch.all(ts[:, 0, :, 0, 0][mask] == 0)
    assert torch.allclose(ts[:, 0, :, 0, 0][~mask], torch.tensor(10 / 11))


def test_loss_only_on_generated_frames():
    lay = libero_layout()
    den = CosmosDenoiser(RecordingNet(out=0.0), NoiseConfig(preconditioning="edm"), padding_mask_channel=False)
    mask = lay.condition_masks(["value", "policy"])
    x0 = torch.randn(2, 16, 9, 8, 8)
    noise = torch.randn_like(x0)
    sigma = torch.tensor([2.0, 3.0])
    loss, denoised = den.loss(x0, mask, torch.zeros(2, 4, 8), sigma, noise)
    x_noisy = x0 + sigma[:, None, None, None, None] * noise
    c_skip = 1 / (sigma**2 + 1)
    expected_d = c_skip[:, None, None, None, None] * x_noisy  # network output 0
    gen = ~mask
    for i in range(2):
        err = (expected_d[i] - x0[i])[:, gen[i]].pow(2).mean()
        assert loss[i].item() == pytest.approx((10 * (sigma[i] ** 2 + 1) / sigma[i] ** 2 * err).item(), rel=1e-4)
    # changing the clean latents of conditioning frames does not change the loss
    x0b = x0.clone()
    x0b[0][:, mask[0]] += 5.0
    loss_b, _ = den.loss(x0b, mask, torch.zeros(2, 4, 8), sigma, noise)
    assert loss_b[0].item() == pytest.approx(loss[0].item(), rel=1e-5)


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_samplers_reach_a_fixed_target(name):
    target = torch.randn(2, 5)
    calls = []

    def den(x, sigma):
        calls.append(float(sigma))
        return target

    sigmas = sampling_sigmas(5, 4.0, 80.0)
    out = get_sampler(name)(den, torch.randn(2, 5) * 80, sigmas)
    assert torch.allclose(out, target, atol=1e-4)
    if name != "heun":
        assert len(calls) == 6  # 5 steps + one clean call at sigma_min
        assert calls[-1] == pytest.approx(4.0)


def test_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        get_sampler("ddim")
