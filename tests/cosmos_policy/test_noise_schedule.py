import math

import pytest
import torch

from cosmos_policy.noise_schedule import (
    edm_scalings,
    get_sigmas_karras,
    rectified_flow_scalings,
    sample_hybrid_sigmas,
    sampling_sigmas,
)
from cosmos_policy.sampler import sample_euler


def test_karras_endpoints_and_order():
    sigmas = get_sigmas_karras(6, 4.0, 80.0, rho=7.0)
    assert sigmas[0].item() == pytest.approx(80.0)
    assert sigmas[-2].item() == pytest.approx(4.0)
    assert sigmas[-1].item() == 0.0
    assert torch.all(sigmas[:-1] > sigmas[1:])
    grid = sampling_sigmas(5, 4.0, 80.0)
    assert len(grid) == 7 and grid[0].item() == pytest.approx(80.0) and grid[-2].item() == pytest.approx(4.0)


def test_karras_matches_diffusers_edm_euler():
    from diffusers import EDMEulerScheduler

    sched = EDMEulerScheduler(sigma_min=4.0, sigma_max=80.0, sigma_data=1.0, rho=7.0, sigma_schedule="karras",
                              final_sigmas_type="zero")
    sched.set_timesteps(6)
    assert torch.allclose(sched.sigmas.float(), get_sigmas_karras(6, 4.0, 80.0, 7.0), rtol=1e-5)


def test_euler_step_matches_diffusers_edm_euler():
    from diffusers import EDMEulerScheduler

    sched = EDMEulerScheduler(sigma_min=4.0, sigma_max=80.0, sigma_data=1.0, rho=7.0, sigma_schedule="karras",
                              final_sigmas_type="zero", prediction_type="epsilon")
    sched.set_timesteps(6)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 3, 4, generator=gen) * 80
    model_output = torch.randn(2, 3, 4, generator=gen)
    sigma = sched.sigmas[0]
    denoised = sched.precondition_outputs(sample, model_output, sigma)
    expected = sched.step(model_output, sched.timesteps[0], sample).prev_sample
    ours = sample_euler(lambda x, s: denoised, sample, sched.sigmas[:2].float())
    assert torch.allclose(ours, expected, atol=1e-4)


def test_hybrid_sigma_draws_thirty_percent_uniform():
    gen = torch.Generator().manual_seed(0)
    n = 20000
    sigmas, from_uniform = sample_hybrid_sigmas(n, p_mean=math.log(4), p_std=1.2, uniform_prob=0.3,
                                                uniform_low=1.0, uniform_high=85.0, generator=gen)
    assert from_uniform.float().mean().item() == pytest.approx(0.3, abs=0.015)
    uni = sigmas[from_uniform]
    assert uni.min() >= 1.0 and uni.max() <= 85.0
    assert uni.mean().item() == pytest.approx(43.0, abs=1.0)
    assert sigmas[~from_uniform].log().mean().item() == pytest.approx(math.log(4), abs=0.05)
    scaled, _ = sample_hybrid_sigmas(n, p_mean=math.log(4), p_std=1.2, uniform_prob=0.3, uniform_low=1.0,
                                     uniform_high=85.0, scale=3.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(scaled, sigmas * 3.0)


@pytest.mark.parametrize("scalings", [rectified_flow_scalings, edm_scalings])
def test_preconditioning_recovers_x0_from_ideal_output(scalings):
    x0, n = torch.randn(100), torch.randn(100)
    sigma = torch.full((100,), 7.0)
    c_skip, c_out, c_in, c_noise = scalings(sigma)
    x = x0 + sigma * n
    ideal = (x0 - c_skip * x) / c_out
    assert torch.allclose(c_skip * x + c_out * ideal, x0, atol=1e-5)
    assert torch.allclose(c_noise, sigma / (1 + sigma))
    if scalings is rectified_flow_scalings:
        assert torch.allclose(ideal, n - x0, atol=1e-4)  # velocity target
        assert torch.allclose(c_in * x, (1 - c_noise) * x0 + c_noise * n, atol=1e-5)
