"""Training data without Ray: selection from the lake, sample streams with resumable positions, batch mixes."""

import numpy as np
import pytest

from cosmos_policy.configuration_cosmos_policy import TrainConfig, get_config
from cosmos_policy.latent_layout import libero_layout
from cosmos_policy.samples import mix_counts
from flywheel.config import load_config
from flywheel.model_setup import ModelSetupError, training_config
from storage_schemas.layout import LakeLayout
from tasks.train_data import (
    BatchMixer,
    InMemoryShard,
    SampleStream,
    StreamPosition,
    read_samples,
    select_training_episodes,
)
from tests.fixtures.lake import write_synthetic_episodes


def _rows(n, tag):
    return {"t": np.arange(n), "tag": np.array([tag] * n), "value": np.zeros(n, np.float32)}


def test_mix_counts_sum_exactly():
    assert mix_counts((0.5, 0.25, 0.25), 16).tolist() == [8, 4, 4]
    assert mix_counts((0.1, 0.45, 0.45), 16).tolist() == [2, 7, 7]
    assert mix_counts((0.1, 0.45, 0.45), 4).sum() == 4
    assert TrainConfig().mix_fractions("refine") == pytest.approx((0.1, 0.45, 0.45))
    assert TrainConfig().mix_fractions("base") == (0.5, 0.25, 0.25)


def test_one_training_config_preset_recipe_then_overrides():
    tiny = get_config("tiny").train
    cfg = load_config("cpu")
    resolved = training_config(cfg, tiny, "base")
    assert resolved.lr == tiny.lr and resolved.lr_schedule == "cosine"  # the preset's recipe...
    assert resolved.steps == cfg.train.steps and resolved.batch_size == cfg.train.batch_size  # ...with the profile's
    refine = training_config(load_config("cpu", None, ["refine.rollout_fraction=0.8", "refine.lr=1e-5"]), tiny,
                             "refine")
    assert refine.steps == cfg.refine.steps and refine.lr == 1e-5
    assert refine.mix_fractions("refine") == pytest.approx((0.2, 0.4, 0.4))
    paper = training_config(load_config("paper"), get_config("2b").train, "base")
    assert (paper.lr, paper.lr_schedule, paper.batch_size, paper.steps) == (1e-4, "constant", 1920, 40000)
    assert training_config(load_config("cpu", None, ["train.augment_shift=0.25"]), tiny, "base").augment_shift == 0.25
    assert training_config(load_config("cpu", None, ["train.loss_normalization=generated"]), tiny,
                           "base").loss_normalization == "generated"
    assert training_config(load_config("cpu"), tiny, "base").loss_normalization == "all"  # the reference's
    with pytest.raises(ModelSetupError, match="not divisible"):
        training_config(load_config("cpu", None, ["train.num_workers=3"]), tiny, "base")


def test_stream_continues_across_epochs_and_resumes_where_it_stopped():
    shard = InMemoryShard(_rows(10, "demo"))
    stream = SampleStream(shard, batch_size=4, seed=3)
    seen = [stream.next()["t"].tolist() for _ in range(6)]  # 24 rows = 2.4 epochs
    assert all(len(b) == 4 for b in seen)
    first_epoch = sorted(sum(seen[:2], []) + seen[2][:2])
    assert first_epoch == list(range(10))  # one epoch covers every row once; the short last batch is completed
    # Resume: a new stream at the saved position gives the batches the old one would have given next.
    pos = StreamPosition(stream.position.epoch, stream.position.batches)
    expected = [stream.next()["t"].tolist() for _ in range(3)]
    resumed = SampleStream(InMemoryShard(_rows(10, "demo")), batch_size=4, seed=3, position=pos)
    got = [resumed.next()["t"].tolist() for _ in range(3)]
    assert pos.epoch == 2 and got[1:] == expected[1:]  # (the first may differ by the carried-over rows)
    assert not (got[0] == seen[0])  # not restarted from the first batch of epoch 0


def test_base_mix_takes_every_type_from_demos():
    streams = {"demo": SampleStream(InMemoryShard(_rows(50, "demo")), 8, 0)}
    rows, types = BatchMixer(streams, (0.5, 0.25, 0.25), 8, 0).next(0)
    assert types == ["policy"] * 4 + ["world_model"] * 2 + ["value"] * 2 and set(rows["tag"]) == {"demo"}


def test_refine_mix_is_90_10_and_balances_outcomes():
    sizes = BatchMixer.stream_batch_sizes(["demo", "success", "failure"], (0.1, 0.45, 0.45), 20)
    assert sizes == {"demo": 2, "success": 9, "failure": 9}
    streams = {n: SampleStream(InMemoryShard(_rows(40, n)), k, 0) for n, k in sizes.items()}
    counts = {"demo": 0, "success": 0, "failure": 0}
    for step in range(20):
        rows, types = BatchMixer(streams, (0.1, 0.45, 0.45), 20, 0).next(step)
        assert types.count("policy") == 2 and set(rows["tag"][:2]) == {"demo"}  # policy rows are demos
        assert "demo" not in set(rows["tag"][2:])  # world-model/value rows are rollouts
        for tag in rows["tag"]:
            counts[str(tag)] += 1
    assert counts["success"] == counts["failure"] == 180 and counts["demo"] == 40


def test_selection_and_sample_rows_from_the_lake(tmp_path):
    lake = LakeLayout(tmp_path / "lake")
    with pytest.raises(ModelSetupError, match="holds no episodes"):
        select_training_episodes(lake, "libero_object", "base")
    write_synthetic_episodes(lake.root, demos=3, successes=2, failures=1)
    base = select_training_episodes(lake, "libero_object", "base")
    assert base.counts["demo"] == 3 and base.episodes.num_rows == 3 and base.stream_names(True) == ["demo"]
    refine = select_training_episodes(lake, "libero_object", "refine")
    assert refine.counts == {"demo": 3, "rollout": 3, "rollout_success": 2, "rollout_failure": 1}
    assert refine.stream_names(True) == ["demo", "success", "failure"] and refine.digest != base.digest
    with pytest.raises(ModelSetupError, match="no demonstrations of suite 'libero_spatial'"):
        select_training_episodes(lake, "libero_spatial", "base")
    with pytest.raises(ModelSetupError, match="selection is empty"):
        select_training_episodes(lake, "libero_object", "base", where="task_id = 99")
    # Samples straight from lake + cache, as the dataset builder reads them.
    from cosmos_policy.tokenizer import PixelShuffleTokenizer
    from flywheel.episodes import cache_latents

    tok = PixelShuffleTokenizer(64, 16, 0)
    cached = cache_latents(lake, tok, tmp_path / "cache", ("eye_in_hand", "agentview"), progress=False, keep=False)
    assert cached.latents == [] and cached.misses == 6
    descs = {k: np.array(v, dtype=object) for k, v in {
        "episode_id": base.episode_ids, "success": [True] * 3, "is_demo": [True] * 3,
        "instruction": base.episodes.column("instruction").to_pylist(),
        "length": base.episodes.column("length").to_pylist()}.items()}
    rows = read_samples(descs, str(lake.root), str(tmp_path / "cache" / tok.fingerprint), libero_layout().to_dict(),
                        0.99)
    assert rows["latent.agentview"].shape[1:] == (16, 8, 8) and rows["actions"].shape[1:] == (16, 7)
    assert len(rows["t"]) == 3 * 5  # steps 0, 8, 16, 24, 32 have images at t and at min(t+16, 39)


def test_clip_tokenizer_rows_from_the_lake_carry_future_and_blank_latents(tmp_path):
    """With the reference's Wan clip encoding, the cache holds each step's future frame and the blank frame, and
    the dataset reader hands both to training (random-weight Wan VAE: wiring only)."""
    from cosmos_policy.configuration_cosmos_policy import TokenizerConfig
    from cosmos_policy.samples import sample_rows
    from cosmos_policy.tokenizer import build_tokenizer
    from flywheel.episodes import cache_latents
    from tests.fixtures.pretrained import save_wan_vae

    lake = LakeLayout(tmp_path / "lake")
    write_synthetic_episodes(lake.root, demos=1, successes=0, failures=0)
    save_wan_vae(tmp_path / "vae")
    tok = build_tokenizer(TokenizerConfig(kind="wan", path=str(tmp_path / "vae"), image_size=64))
    lay = libero_layout()
    with pytest.raises(ValueError, match="needs the layout"):
        cache_latents(lake, tok, tmp_path / "cache", lay.camera_names, progress=False)
    cached = cache_latents(lake, tok, tmp_path / "cache", lay.camera_names, progress=False, latent_layout=lay)
    ep = cached.latents[0]
    sel = select_training_episodes(lake, "libero_object", "base")
    descs = {k: np.array(v, dtype=object) for k, v in {
        "episode_id": sel.episode_ids, "success": [True], "is_demo": [True],
        "instruction": sel.episodes.column("instruction").to_pylist(),
        "length": sel.episodes.column("length").to_pylist()}.items()}
    rows = read_samples(descs, str(lake.root), str(tmp_path / "cache" / cached.fingerprint), lay.to_dict(), 0.99)
    expected = sample_rows(ep, lay)
    assert np.array_equal(rows["future_latent.agentview"], expected["future_latent.agentview"])
    assert np.array_equal(rows["blank"][0], ep.blank) and np.abs(ep.blank).max() > 0
    # The future frame is the clip's, not the image at t' encoded as a current frame.
    pos = np.searchsorted(ep.image_steps, np.minimum(rows["t"] + lay.chunk_size, ep.length - 1))
    assert not np.allclose(rows["future_latent.agentview"], ep.latents["agentview"][pos], atol=1e-3)
