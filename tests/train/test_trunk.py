"""The trainable part of the frozen demo trunk (`dermlib.train.trunk`) and the alignment metrics of history.csv.

Unit checks against references built by hand (a 1x1 conv with weight W + B·A, numpy loops), then a tiny SynthDerm
work dir (3 internal sources, 64 px: 2 x 2 maps) trained for two epochs with a rank-4 adapter: checkpoint,
resume, load_run, the cached-maps path of `encode` against an export's raw-image path.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dermlib.config import get_config
from dermlib.train.loop import ALIGNMENT_METRICS, alignment_metrics, load_trainable, trainable_state
from dermlib.train.model import ImageEncoder, build_model
from dermlib.train.settings import NEUTRAL_TRAIN_KEYS, TrainSettings
from dermlib.train.trunk import ConvHeadAdapter
from dermlib.train.loop import read_checkpoint

C_IN, C_OUT = 320, 1280


def _bn(rng: torch.Generator) -> nn.BatchNorm2d:
    """A batch norm with non-trivial running statistics and affine, in eval mode."""
    bn = nn.BatchNorm2d(C_OUT, eps=1e-3).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(C_OUT, generator=rng))
        bn.running_var.copy_(torch.rand(C_OUT, generator=rng) + 0.5)
        bn.weight.copy_(torch.randn(C_OUT, generator=rng) * 2)
        bn.bias.copy_(torch.randn(C_OUT, generator=rng) * 2)
    return bn


def _reference(x: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bn: nn.BatchNorm2d,
               gamma: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pool(relu6(BN(conv1x1(x; W + B·A)))) in float64 on NCHW maps, with torch's own functional ops; and the
    pre-activation BN(...)."""
    h = F.conv2d(x, (w + b @ a).reshape(C_OUT, C_IN, 1, 1))  # one 1x1 conv with the merged weight
    z = F.batch_norm(h, bn.running_mean.double(), bn.running_var.double(), gamma, beta, False, 0.0, bn.eps)
    return F.adaptive_avg_pool2d(F.relu6(z), 1).flatten(1), z


def test_adapted_head_equals_a_conv_with_w_plus_ba_forward_and_gradients() -> None:
    rng = torch.Generator().manual_seed(0)
    n, h, w_, rank = 11, 3, 2, 5  # 11 images: chunks of 8 and a remainder of 3
    bn = _bn(rng)
    x = torch.randn(n, C_IN, h, w_, generator=rng)
    w = torch.randn(C_OUT, C_IN, generator=rng) * 0.1
    wx = F.conv2d(x, w.reshape(C_OUT, C_IN, 1, 1))
    maps = torch.cat([x, wx], 1).flatten(2).transpose(1, 2).contiguous()  # (N, P, Cin + Cout), as trunk_maps
    adapter = ConvHeadAdapter(C_IN, C_OUT, rank, bn, seed=3)
    with torch.no_grad():
        adapter.B.copy_(torch.randn(C_OUT, rank, generator=rng) * 0.3)
    grad_out = torch.randn(n, C_OUT, generator=rng)
    out = adapter(maps, bn)
    (out * grad_out).sum().backward()

    params = {k: p.detach().double().requires_grad_(True) for k, p in
              (("A", adapter.A), ("B", adapter.B), ("gamma", adapter.bn_weight), ("beta", adapter.bn_bias))}
    ref, z = _reference(x.double(), w.double(), params["A"], params["B"], bn, params["gamma"], params["beta"])
    (ref * grad_out.double()).sum().backward()
    assert 0.1 < float((z < 0).double().mean()) < 0.9 and (z > 6).any()  # both ends of ReLU6 are exercised
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    for name, param in (("A", adapter.A), ("B", adapter.B), ("gamma", adapter.bn_weight), ("beta", adapter.bn_bias)):
        expected = params[name].grad
        assert expected.abs().max() > 0, name
        torch.testing.assert_close(param.grad.double(), expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()),
                                   msg=name)


def test_adapter_starts_at_b_zero_with_a_from_the_seed_alone() -> None:
    bn = _bn(torch.Generator().manual_seed(1))
    state = torch.get_rng_state()
    one, again, other = (ConvHeadAdapter(C_IN, C_OUT, 8, bn, seed=s) for s in (4, 4, 5))
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is not touched
    assert torch.equal(one.A, again.A) and not torch.equal(one.A, other.A)
    assert one.A.abs().max() <= 1 / np.sqrt(C_IN) and one.A.std() > 0.5 / np.sqrt(3 * C_IN)
    assert not one.B.any() and torch.equal(one.bn_weight, bn.weight) and torch.equal(one.bn_bias, bn.bias)


@pytest.fixture(scope="module")
def pretrained() -> tuple[ImageEncoder, ImageEncoder]:
    """EfficientNet-Lite0 with ImageNet weights, without and with a rank-8 adapter (eval mode)."""
    torch.set_num_threads(1)
    return ImageEncoder("efficientnet_lite0", True).eval(), ImageEncoder("efficientnet_lite0", True, 8, 0).eval()


def test_b_zero_reproduces_the_frozen_pooled_features_and_cached_maps_the_raw_path(pretrained) -> None:
    plain, adapted = pretrained
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = plain(images)
        got = adapted(images)
        maps = adapted.maps(images)
    assert maps.shape == (3, 4, C_IN + C_OUT)  # 64 px: 2 x 2 maps
    # the maps are the last block's output and conv_head of it, as the package's extract_features computes them
    with torch.no_grad():
        trunk = adapted.trunk
        x = (images - adapted.mean) / adapted.std
        head = trunk._conv_head(_blocks(trunk, x))
    torch.testing.assert_close(maps[..., C_IN:], head.flatten(2).transpose(1, 2), rtol=0, atol=0)
    # B = 0: the adapted head is the pretrained one (to float32 rounding of BN's formula and the pooling's sum)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=2e-6)
    with torch.no_grad():
        adapted.adapter.B.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
        raw = adapted(images)
        cached = adapted.from_cache(maps.half())  # the cache holds float16
        pooled = adapted.from_cache(expected)  # a 2-D cache row is already pooled
        adapted.adapter.B.zero_()
    assert (raw - expected).abs().max() > 0.05  # the adapter changes the features
    torch.testing.assert_close(cached, raw, rtol=0, atol=5e-3 * float(raw.abs().max()))
    assert pooled is expected


def _blocks(trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last MBConv block's output, from the package's own extract_features by a hook (independent of
    dermlib.train.trunk.efficientnet_blocks)."""
    seen = {}
    handle = trunk._blocks[-1].register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    trunk.extract_features(x)
    handle.remove()
    return seen["out"]


def _settings(strategy: str = "Img", rank: int = 4, seed: int = 0) -> TrainSettings:
    cfg = get_config("demo", {"train.strategy": strategy, "train.trunk_adapter_rank": rank, "train.seed": seed})
    return TrainSettings.from_config(cfg)


def test_gradients_reach_the_adapter_and_bn_affine_and_nothing_else_of_the_trunk() -> None:
    torch.manual_seed(0)
    model = build_model(_settings(), 8).train()
    trunk = model.image_encoder.trunk
    assert not trunk.training and model.image_encoder.training  # a frozen trunk stays in eval mode
    stats = {k: v.clone() for k, v in trunk.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("image_encoder.")} == {
        f"image_encoder.adapter.{k}" for k in ("A", "B", "bn_weight", "bn_bias")}
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3])

    def backward() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images).image_logits, labels).backward()

    backward()
    adapter = model.image_encoder.adapter
    assert adapter.B.grad.abs().max() > 0 and adapter.bn_weight.grad.abs().max() > 0
    assert adapter.bn_bias.grad.abs().max() > 0
    assert not adapter.A.grad.any()  # B = 0: A's gradient is B-weighted (LoRA's start)
    assert all(p.grad is None for p in trunk.parameters())
    with torch.no_grad():
        adapter.B.normal_(0, 0.05)
    backward()
    assert adapter.A.grad.abs().max() > 0
    for key, value in trunk.state_dict().items():  # running statistics and weights untouched
        assert torch.equal(value, stats[key]), key


def test_paired_init_every_strategy_of_a_seed_shares_the_adapter_and_heads() -> None:
    torch.manual_seed(123)
    img, text = build_model(_settings("Img"), 8), build_model(_settings("M"), 8)
    other_seed = build_model(_settings("Img", seed=1), 8)
    no_adapter = build_model(_settings("Img", rank=0), 8)
    shared = [k for k in trainable_state(img) if not k.startswith("text_")]
    for key in shared:
        assert torch.equal(trainable_state(img)[key], trainable_state(text)[key]), key
    assert not torch.equal(img.image_encoder.adapter.A, other_seed.image_encoder.adapter.A)
    for key, value in trainable_state(no_adapter).items():  # the heads do not depend on the adapter's presence
        assert torch.equal(trainable_state(img)[key], value), key
    assert torch.equal(img.image_encoder.adapter.bn_weight, img.image_encoder.trunk._bn1.weight)


def test_trainable_state_holds_the_adapter_not_the_trunk_and_round_trips() -> None:
    torch.manual_seed(0)
    model = build_model(_settings("Img", seed=2), 8)
    with torch.no_grad():
        model.image_encoder.adapter.B.normal_(0, 0.1)
        model.image_encoder.adapter.bn_bias.add_(0.5)
    state = trainable_state(model)
    assert model.frozen_prefixes() == ("image_encoder.trunk.",)
    assert {k for k in state if k.startswith("image_encoder.")} == {
        f"image_encoder.adapter.{k}" for k in ("A", "B", "bn_weight", "bn_bias")}
    assert sum(v.numel() for v in state.values()) < 300_000  # heads + adapter, not the trunk's 3.4M
    fresh = build_model(_settings("Img", seed=5), 8)
    load_trainable(fresh, state)
    for key, value in state.items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # rank 0 keeps today's checkpoint: no image encoder key at all
    assert not any(k.startswith("image_encoder") for k in trainable_state(build_model(_settings(rank=0), 8)))


def test_config_checks_the_rank_and_rank_0_keeps_every_run_id() -> None:
    from dermlib.train.runs import config_hash

    with pytest.raises(ValueError, match="trunk_adapter_rank"):
        get_config("demo", {"train.trunk_adapter_rank": -1})
    with pytest.raises(ValueError, match="freeze_image_encoder"):
        get_config("paper", {"train.trunk_adapter_rank": 4})
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        get_config("demo", {"train.trunk_adapter_rank": 4, "train.image_encoder": "densenet121"})
    assert get_config("paper")["train"]["trunk_adapter_rank"] == 0
    for profile in ("demo", "paper"):
        cfg = get_config(profile, {"train.trunk_adapter_rank": 0})
        before = copy.deepcopy(cfg)  # a config from before the keys existed
        for key in NEUTRAL_TRAIN_KEYS:
            before["train"].pop(key)
        assert config_hash(cfg) == config_hash(before)
    demo = get_config("demo", {"train.trunk_adapter_rank": 0})
    assert config_hash(get_config("demo", {"train.trunk_adapter_rank": 4})) != config_hash(demo)
    saved = {k: v for k, v in demo["train"].items() if k != "trunk_adapter_rank"}  # a run saved before the key
    assert TrainSettings.from_section(saved).trunk_adapter_rank == 0


def _alignment_by_hand(img: np.ndarray, txt: np.ndarray, labels: np.ndarray, sources: np.ndarray) -> list[float]:
    """Mean paired cosine, mean within-source lift and within-source i2t mAP with plain loops (no ties)."""
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    cos, lifts, aps = [], [], []
    for i in range(len(img)):
        cos.append(float(unit(img[i]) @ unit(txt[i])))
        group = [j for j in range(len(img)) if sources[j] == sources[i]]
        if len(group) < 2:
            continue
        others = [float(unit(img[i]) @ unit(txt[j])) for j in group if j != i]
        lifts.append(cos[-1] - sum(others) / len(others))
        ranked = sorted(group, key=lambda j: -float(unit(img[i]) @ unit(txt[j])))
        hits, precisions = 0, []
        for rank, j in enumerate(ranked, start=1):
            if labels[j] == labels[i]:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / len(precisions))
    return [sum(cos) / len(cos), sum(lifts) / len(lifts), sum(aps) / len(aps)]


def test_alignment_metrics_match_a_by_hand_reference() -> None:
    rng = np.random.default_rng(0)
    img, txt = rng.standard_normal((9, 6)), rng.standard_normal((9, 6))
    txt[:4] += 2 * img[:4]  # some real alignment
    labels = np.array([0, 1, 0, 2, 1, 1, 0, 2, 2])
    sources = np.array(["a", "a", "a", "a", "b", "b", "b", "c", "b"])  # "c" has a single pair
    got = alignment_metrics(img.astype(np.float32), txt.astype(np.float32), labels, sources)
    assert list(got) == list(ALIGNMENT_METRICS)
    np.testing.assert_allclose(list(got.values()), _alignment_by_hand(img, txt, labels, sources), rtol=1e-5)
    assert all(np.isnan(v) for v in alignment_metrics(img[:0], txt[:0], labels[:0], sources[:0]).values())


# ------------------------------------------------------------------------------------- a tiny work dir, end to end
def make_work_dir(root: Path, n_per_source: int = 16, size: int = 64) -> Path:
    """Real SynthDerm images of 3 internal sources in the pipeline's layout (manifest with splits, uint8 cache) and
    template M notes, one validation sample's failed."""
    from dermlib.data.labels import CLASS_NAMES
    from dermlib.data.preprocess import build_cache
    from dermlib.data.schema import save_manifest
    from dermlib.data.synthderm import SYNTH_SOURCES, generate

    internal = [n for n, s in SYNTH_SOURCES.items() if s["partition"] == "internal"][:3]
    work = root / "work"
    manifest = generate(root / "synthderm", n_per_source=n_per_source, seed=0, image_size=64, sources=internal)
    manifest["split"] = np.random.default_rng(0).choice(["train", "val", "test"], size=len(manifest), p=[0.6, 0.25, 0.15])
    manifest["partition"] = "internal"
    save_manifest(manifest, work / "manifest.parquet")
    build_cache(manifest, work / "cache", size=size)
    failed = manifest.index[manifest["split"] == "val"][0]  # one validation sample without a note
    rows = [{"sample_id": r["sample_id"], "strategy": "M", "status": "failed" if i == failed else "ok",
             "note": f"Case {r['sample_id']}: a {r['age']:.0f} year old patient, lesion on the {r['site']}, "
                     f"{CLASS_NAMES[r['label']]}."}  # every note differs: no tied similarities
            for i, r in manifest.iterrows()]
    (work / "notes").mkdir()
    pd.DataFrame(rows).to_parquet(work / "notes" / "notes.parquet")
    return work


def tiny_cfg(work: Path, strategy: str = "M", **train: object) -> dict:
    overrides = {"work_dir": str(work), "train.strategy": strategy, "train.epochs": 2, "train.batch_size": 8,
                 "train.max_text_len": 48, "train.note_features": None, "train.feature_views": 2,
                 "train.trunk_adapter_rank": 4, "train.patience": 5}
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return get_config("demo", overrides)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return make_work_dir(tmp_path_factory.mktemp("trunk"))


@pytest.fixture(scope="module")
def m_run(work: Path) -> Path:
    from dermlib.train.runs import fit

    return fit(tiny_cfg(work))


class Interrupt(Exception):
    pass


def _stop_after_first(row: dict) -> None:
    if row["epoch"] == 1:
        raise Interrupt


def test_fit_trains_the_adapter_caches_maps_and_logs_alignment(work: Path, m_run: Path) -> None:
    from dermlib.train.runs import fit

    hist = pd.read_csv(m_run / "history.csv")
    assert set(ALIGNMENT_METRICS) <= set(hist.columns) and hist[list(ALIGNMENT_METRICS)].notna().all().all()
    assert (hist["val_paired_cosine"].abs() <= 1).all() and (hist["val_map_i2t_within_source"] <= 1).all()
    saved = read_checkpoint(m_run / "checkpoint.pt")
    assert saved["model"]["image_encoder.adapter.B"].abs().max() > 0  # it trained
    assert not any(k.startswith("image_encoder.trunk.") for k in saved["model"])
    cached = sorted((work / "features").glob("image-maps-*.npy"))
    assert cached and all(np.load(p, mmap_mode="r").dtype == np.float16 for p in cached)
    assert {np.load(p, mmap_mode="r").shape[0] for p in cached} == {1, 2}  # val: view 0 only; train: 2 views
    assert all(np.load(p, mmap_mode="r").shape[2:] == (4, C_IN + C_OUT) for p in cached)
    img = pd.read_csv(fit(tiny_cfg(work, "Img", epochs=1)) / "history.csv")
    assert img[list(ALIGNMENT_METRICS)].isna().all().all()


@pytest.mark.slow  # trains the run again, interrupted: the full lane
def test_interrupted_run_resumes_to_the_same_adapter_and_history(work: Path, m_run: Path, tmp_path: Path) -> None:
    from dermlib.train.runs import fit

    other = tmp_path / "work"
    shutil.copytree(work, other, ignore=shutil.ignore_patterns("runs"))
    cfg = tiny_cfg(other)
    with pytest.raises(Interrupt):
        fit(cfg, on_epoch_end=_stop_after_first)
    folder = other / "runs" / m_run.name
    assert not (folder / "done").exists()
    assert fit(cfg) == folder
    drop = ["seconds", "samples_per_s"]
    pd.testing.assert_frame_equal(pd.read_csv(folder / "history.csv").drop(columns=drop),
                                  pd.read_csv(m_run / "history.csv").drop(columns=drop))
    a, b = (read_checkpoint(f / "checkpoint.pt") for f in (folder, m_run))
    for key in ("model", "best_model"):
        assert a[key].keys() == b[key].keys()
        for name, value in b[key].items():
            torch.testing.assert_close(a[key][name], value, rtol=0, atol=0, msg=f"{key}.{name}")


def test_load_run_restores_the_adapter_and_encode_matches_an_export(work: Path, m_run: Path, tmp_path: Path) -> None:
    from dermlib.evaluate.export import export_run, load_exported
    from dermlib.train.batches import load_splits
    from dermlib.train.inference import encode, load_run

    model, cfg = load_run(m_run)
    saved = read_checkpoint(m_run / "checkpoint.pt")
    best = saved["best_model"] or saved["model"]
    for key in ("A", "B", "bn_weight", "bn_bias"):
        assert torch.equal(getattr(model.image_encoder.adapter, key), best[f"image_encoder.adapter.{key}"]), key
    val = load_splits(cfg, model.text_encoder.tokenizer)["val"]
    images = np.ascontiguousarray(val.images[val.rows])
    notes = [f"note {i}" for i in range(len(images))]
    cached = encode(model, images, notes, cfg, batch_size=5, pool_id="trunk-test")  # maps from the cache
    assert list((work / "features").glob("image-maps-*.npy"))
    raw = encode(model, images, notes, cfg, batch_size=5)  # raw images through the trunk and adapter
    exported, _ = load_exported(export_run(m_run, tmp_path / "export"))
    from_export = encode(exported, images, notes, cfg, batch_size=5)
    scale = float(np.abs(raw["image_emb"]).max())
    np.testing.assert_allclose(from_export["image_emb"], raw["image_emb"], rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(cached["image_emb"], raw["image_emb"], rtol=0, atol=1e-2 * scale)  # float16 maps
    np.testing.assert_allclose(from_export["text_emb"], raw["text_emb"], rtol=1e-5, atol=1e-5)
    accuracy = float((cached["image_logits"].argmax(1) == val.labels).mean())
    hist = pd.read_csv(m_run / "history.csv")
    assert accuracy == pytest.approx(float(hist.loc[hist["epoch"] == saved["best_epoch"], "val_accuracy"].iloc[0]))


def test_evaluate_alignment_matches_a_by_hand_reference_and_draws_no_random_numbers(work: Path) -> None:
    from dermlib.train.loop import Trainer

    trainer = Trainer(tiny_cfg(work))
    trainer.train_epoch(1)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    row = trainer.evaluate()
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))
    # the same numbers from the model's embeddings of the validation split, its first note each, by hand
    val, model = trainer.splits["val"], trainer.model.eval()
    noted = np.array([len(n) > 0 for n in val.notes])
    assert not noted.all() and len(set(val.sources)) == 3  # a sample without a note; three sources
    with torch.no_grad():
        maps = torch.from_numpy(np.array(val.image_features[0]))  # view 0: the unaugmented maps
        img = model.image_proj(model.image_encoder.from_cache(maps)).numpy()
        txt = model.text_proj(torch.from_numpy(np.stack([f[0] for f in val.note_features if len(f)]))).numpy()
    expected = _alignment_by_hand(img[noted].astype(np.float64), txt.astype(np.float64), val.labels[noted],
                                  val.sources[noted])
    assert np.isfinite(expected).all()
    np.testing.assert_allclose([row[k] for k in ALIGNMENT_METRICS], expected, rtol=1e-4, atol=1e-6)
