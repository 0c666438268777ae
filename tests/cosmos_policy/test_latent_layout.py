import pytest
import torch

from cosmos_policy.latent_layout import (
    LatentLayout,
    decode_value,
    extract,
    get_layout,
    inject,
    layout_mismatch,
    libero_layout,
    robocasa_layout,
)


def test_frame_counts_from_config():
    lib = libero_layout()
    assert lib.num_frames == 9
    assert [s.name for s in lib.slots] == [
        "blank", "proprio", "cam:eye_in_hand", "cam:agentview", "action",
        "future_proprio", "future_cam:eye_in_hand", "future_cam:agentview", "value"]
    assert robocasa_layout().num_frames == 11
    assert libero_layout(object_state_dim=10).num_frames == 10
    assert libero_layout(object_state_dim=10).index("object_state") == 4
    custom = LatentLayout(camera_names=("a", "b", "c", "d"), proprio_dim=3, action_dim=2, chunk_size=4)
    assert custom.num_frames == 13


def test_invalid_layouts_name_the_value():
    with pytest.raises(ValueError, match="action chunk of 2048"):
        LatentLayout(camera_names=("a",), proprio_dim=3, action_dim=128, chunk_size=16)
    with pytest.raises(ValueError, match="unique"):
        LatentLayout(camera_names=("a", "a"), proprio_dim=3, action_dim=2)
    with pytest.raises(ValueError, match="chunk_size must be > 0, got 0"):
        LatentLayout(camera_names=("a",), proprio_dim=3, action_dim=2, chunk_size=0)
    with pytest.raises(ValueError, match="unknown layout preset 'aloha'"):
        get_layout("aloha")


@pytest.mark.parametrize("dim", [1, 7, 9, 68, 112, 192, 1000, 1024])
def test_inject_extract_round_trip_exact(dim):
    torch.manual_seed(dim)
    vec = torch.rand(5, dim) * 2 - 1
    frames = inject(vec, (16, 8, 8))
    assert frames.shape == (5, 16, 8, 8)
    assert (extract(frames, dim) - vec).abs().max().item() <= 1e-6


def test_extract_averages_copies():
    vec = torch.zeros(1, 7)
    frames = inject(vec, (16, 8, 8))
    flat = frames.reshape(1, -1)
    flat[0, 0] = 1.0  # one copy of entry 0 perturbed: 1024 = 146*7 + 2 → entry 0 has 147 copies
    assert extract(flat.reshape(1, 16, 8, 8), 7)[0, 0].item() == pytest.approx(1 / 147)


def test_value_decoding():
    frames = inject(torch.tensor([[-1.0], [0.0], [0.6], [1.5]]), (16, 8, 8))
    assert torch.allclose(decode_value(frames), torch.tensor([0.0, 0.5, 0.8, 1.0]))


def test_masks_per_sample_type():
    lay = libero_layout()
    current = {"blank", "proprio", "cam:eye_in_hand", "cam:agentview"}
    future = {"future_proprio", "future_cam:eye_in_hand", "future_cam:agentview"}

    def given(sample_type):
        mask = lay.condition_mask(sample_type)
        return {s.name for s, m in zip(lay.slots, mask.tolist(), strict=True) if m}

    assert given("policy") == current
    assert given("world_model") == current | {"action"}
    assert given("value") == current | {"action"} | future
    obj = libero_layout(object_state_dim=4)
    assert obj.condition_mask("policy")[obj.index("object_state")]
    assert lay.condition_masks(["policy", "value"]).shape == (2, 9)
    with pytest.raises(ValueError, match="unknown sample type 'q'"):
        lay.condition_mask("q")


def test_layout_serialisation_and_mismatch():
    lay = robocasa_layout(latent_hw=28)
    assert LatentLayout.from_dict(lay.to_dict()) == lay
    diffs = layout_mismatch(libero_layout(), robocasa_layout())
    assert any(d.startswith("camera_names") for d in diffs)
    assert not layout_mismatch(libero_layout(), libero_layout())
