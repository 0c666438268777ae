"""Checkpoints that travel: the tokenizer and text encoder are named by kind and content fingerprint, so a
checkpoint folder copied elsewhere loads with the components found on that machine, and a different tokenizer
is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cosmos_policy.checkpoint_io import load_checkpoint, save_checkpoint
from cosmos_policy.components import ComponentMismatchError, ComponentNotFoundError, vae_fingerprint
from cosmos_policy.configuration_cosmos_policy import get_config
from cosmos_policy.latent_layout import libero_layout
from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
from cosmos_policy.normalization import compute_stats
from tasks.registry import checkpoint_digest
from tests.fixtures.pretrained import save_tiny_pipeline, save_wan_vae


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint, pipeline folder it was made from): a checkpoint of a model built on a pretrained folder."""
    root = tmp_path_factory.mktemp("travel")
    pipeline = save_tiny_pipeline(root / "pipeline")
    model = CosmosPolicyModel.from_pretrained(get_config("tiny", libero_layout(latent_hw=8)), pipeline)
    rng = np.random.default_rng(0)
    stats = compute_stats([rng.normal(size=(32, 9))], [rng.uniform(-1, 1, (32, 7))])
    return save_checkpoint(root / "ckpt", model, stats), pipeline


def test_checkpoint_records_components_by_fingerprint(trained):
    ckpt, pipeline = trained
    comps = json.loads((ckpt / "cosmos_policy.json").read_text())["components"]
    assert comps["tokenizer"]["kind"] == "wan" and comps["tokenizer"]["fingerprint"] == vae_fingerprint(pipeline)
    assert comps["text_encoder"]["kind"] == "t5" and comps["text_encoder"]["fingerprint"].startswith("t5-")


def test_copied_checkpoint_loads_with_the_components_of_another_machine(trained, tmp_path):
    ckpt, pipeline = trained
    moved_pipeline = shutil.copytree(pipeline, tmp_path / "elsewhere" / "pipeline")
    moved = shutil.copytree(ckpt, tmp_path / "elsewhere" / "ckpt")
    assert checkpoint_digest(moved) == checkpoint_digest(ckpt)  # the same model at two paths: one version
    # Simulate another machine: the folder the checkpoint was saved from does not exist there.
    hidden = pipeline.rename(pipeline.with_name("hidden"))
    try:
        with pytest.raises(ComponentNotFoundError, match="wan-.*vae_path"):
            load_checkpoint(moved)
        model, _ = load_checkpoint(moved, vae_path=moved_pipeline, t5_path=moved_pipeline)
        assert model.config.tokenizer.path == str(moved_pipeline) and model.config.text.t5_path == str(moved_pipeline)
        # Or copied into the checkpoint folder: then nothing needs to be passed.
        for sub in ("vae", "text_encoder", "tokenizer"):
            shutil.copytree(moved_pipeline / sub, moved / sub)
        model, _ = load_checkpoint(moved)
        assert model.config.tokenizer.path == str(moved / "vae") and model.config.text.t5_path == str(moved)
    finally:
        hidden.rename(pipeline)


def test_another_tokenizer_is_refused_naming_both_fingerprints(trained, tmp_path):
    ckpt, pipeline = trained
    save_wan_vae(tmp_path / "other_vae", seed=1)
    other = vae_fingerprint(tmp_path / "other_vae")
    assert other != vae_fingerprint(pipeline)
    # While the matching folder is still reachable, the mismatching one passed first is skipped.
    model, _ = load_checkpoint(ckpt, vae_path=tmp_path / "other_vae")
    assert model.config.tokenizer.path == str(pipeline / "vae")
    hidden = pipeline.rename(pipeline.with_name("hidden2"))
    try:
        with pytest.raises(ComponentMismatchError, match=f"{vae_fingerprint(hidden)}.*{other}"):
            load_checkpoint(ckpt, vae_path=tmp_path / "other_vae", t5_path=hidden)
    finally:
        hidden.rename(pipeline)


def test_stand_in_records_must_match_the_config(tmp_path):
    from tests.fixtures.checkpoints import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    meta_path = ckpt / "cosmos_policy.json"
    meta = json.loads(meta_path.read_text())
    assert meta["components"]["tokenizer"]["kind"] == "pixel_shuffle"
    assert meta["components"]["text_encoder"]["kind"] == "hash"
    load_checkpoint(ckpt)
    meta["components"]["tokenizer"]["fingerprint"] = "pixel_shuffle-v1-s64-c16-seed7"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ComponentMismatchError, match="seed7"):
        load_checkpoint(ckpt)
