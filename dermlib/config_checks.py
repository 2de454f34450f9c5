"""The allowed values of every numeric, list and choice setting of a config (`dermlib.config`), checked when a
config is loaded, so a bad `--set` stops before any work: `config_problems(cfg)` lists one line per bad value,
naming the key, the value and what it must be (`notes.max_retries=-1: must be 0 or more (a whole number)`).

A profile that is not synthetic (`synthetic: false`: real data) may not point `notes.cache_path` or
`eval.class_descriptions_cache` at a committed demo cache (COMMITTED_CACHES): its notes, derived from real data,
would be written into a file that is committed and shared (`committed_cache_problems`).

Types are checked where overrides are applied (`dermlib.config._check_type`); here the values. The choices are
written out here (the config sits below every step); `tests/test_config.py` checks them against the steps' own
lists (`dermlib.notes.plan.BACKENDS`, `dermlib.train.model.IMAGE_ENCODERS`, ...).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dermlib.workdir import REPO_ROOT, SOURCE_ROOT

Rule = Callable[[Any], "str | None"]  # None: the value is allowed; else what it must be

BACKENDS = ("openai", "vllm", "ollama", "llamacpp")
IMAGE_ENCODERS = ("densenet121", "efficientnet_lite0")
PROJECTIONS = ("separate", "shared")
POOLINGS = ("cls", "pooler", "mean")
OPTIMIZERS = ("adam_amsgrad_l2", "adamw")
SELECTION = ("val_image_loss", "val_kappa")
TAXONOMIES = ("isic8", "binary")
PARTITIONS = ("internal", "external")
LOSS_TERMS = ("ce_image", "ce_text", "l1", "cosine", "nt_xent")


def _is_number(value: Any, whole: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if whole else math.isfinite(value)


def number(low: float | None = None, high: float | None = None, *, whole: bool = False, above: bool = False,
           below: bool = False, null: str | None = None) -> Rule:
    """A finite number (`whole`: an integer) from `low` (`above`: greater than it) to `high` (`below`: less than
    it); `null`, when given, says what null means (then null is allowed)."""
    if high is None:
        bound = f"greater than {low:g}" if above else f"{low:g} or more" if low is not None else "a number"
    else:
        bound = f"from {low:g} {'up to, not including,' if below else 'to'} {high:g}"
    needs = f"{bound} ({'a whole number' if whole else 'a finite number'})" + (f"; null: {null}" if null else "")

    def rule(value: Any) -> str | None:
        if value is None and null:
            return None
        ok = _is_number(value, whole) and (low is None or (value > low if above else value >= low)) and (
            high is None or (value < high if below else value <= high))
        return None if ok else needs

    return rule


def choice(*options: str) -> Rule:
    """One of `options`."""
    return lambda value: None if value in options else "one of " + ", ".join(repr(o) for o in options)


def matches(pattern: str, needs: str) -> Rule:
    """A text matching `pattern` (whole)."""
    return lambda value: None if isinstance(value, str) and re.fullmatch(pattern, value) else needs


def items(rule: Rule, *, what: str, unique: bool = False, length: int | None = None, empty: bool = False) -> Rule:
    """A list (non-empty unless `empty`; `length` values if given; distinct values if `unique`) of values `rule`
    allows."""
    size = f"{length} values" if length else "a list" if empty else "a non-empty list"

    def rule_(value: Any) -> str | None:
        needs = f"{size} of {what}" + (", all different" if unique else "")
        if not isinstance(value, list) or (not value and not empty) or (length and len(value) != length):
            return needs
        if any(rule(v) for v in value) or (unique and len(set(map(json.dumps, value))) != len(value)):
            return needs
        return None

    return rule_


def mapping(rule: Rule, *, what: str, keys: tuple[str, ...] | None = None) -> Rule:
    """A mapping (of exactly `keys`, if given) whose values `rule` allows."""
    needs = f"a mapping {'of ' + ', '.join(keys) + ' ' if keys else ''}to {what}"
    return lambda value: None if isinstance(value, dict) and value and (keys is None or set(value) == set(keys)) \
        and not any(rule(v) for v in value.values()) else needs


def either(first: Rule, second: Rule) -> Rule:
    """A value one of two rules allows."""
    def rule(value: Any) -> str | None:
        a, b = first(value), second(value)
        return None if a is None or b is None else f"{a}, or {b}"
    return rule


def _base_url(value: Any) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.netloc)
    return None if ok else "an http:// or https:// URL with a host (e.g. http://127.0.0.1:8000/v1); null: OpenAI"


POSITIVE, NON_NEGATIVE = number(0, whole=True, above=True), number(0, whole=True)
SEED = NON_NEGATIVE
TOKENS = number(0, whole=True, above=True)
NAME = matches(r"\S.*", "a non-empty text")
RULES: dict[str, Rule] = {
    "data.n_per_source": NON_NEGATIVE, "data.synth_image_size": POSITIVE, "data.seed": SEED,
    "data.image_size": POSITIVE, "data.workers": POSITIVE, "data.taxonomy": choice(*TAXONOMIES),
    "data.split_fractions": items(number(0), what="fractions >= 0 summing to 1 (train, val, test)", length=3),
    "data.limit_per_source": number(0, whole=True, above=True, null="no limit"),
    "notes.backend": choice(*BACKENDS), "notes.base_url": _base_url, "notes.model": NAME,
    "notes.concurrency": POSITIVE, "notes.timeout": number(0, above=True), "notes.max_retries": NON_NEGATIVE,
    "notes.outage_after": POSITIVE, "notes.stop_after_permanent": POSITIVE, "notes.temperature": number(0, 2),
    "notes.max_tokens": either(TOKENS, mapping(TOKENS, what="whole numbers greater than 0")),
    "notes.cache_path": NAME, "notes.limit": number(0, whole=True, null="every row"),
    "notes.ask_limit": number(0, whole=True, null="no limit"),
    "notes.reask_limit": number(0, whole=True, null="no limit"), "notes.servers": POSITIVE,
    "notes.n_threads": POSITIVE,
    "notes.api_key_env": either(matches(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable's name"),
                                lambda v: None if v is None else "null (OPENAI_API_KEY, to OpenAI only)"),
    "train.seed": SEED, "train.image_encoder": choice(*IMAGE_ENCODERS), "train.text_encoder": NAME,
    "train.trunk_adapter_rank": NON_NEGATIVE, "train.feature_views": POSITIVE, "train.embed_dim": POSITIVE,
    "train.projection": choice(*PROJECTIONS), "train.pooling": choice(*POOLINGS),
    "train.train_last_n_text_layers": NON_NEGATIVE, "train.max_text_len": POSITIVE, "train.batch_size": POSITIVE,
    "train.epochs": POSITIVE, "train.optimizer": choice(*OPTIMIZERS), "train.lr": number(0, above=True),
    "train.weight_decay": number(0), "train.select_on": choice(*SELECTION), "train.patience": POSITIVE,
    "train.dropout": number(0, 1, below=True),
    "train.loss_weights": mapping(number(0), what="finite numbers >= 0", keys=LOSS_TERMS),
    "train.temperature": number(0, above=True), "train.num_workers": NON_NEGATIVE, "train.threads": NON_NEGATIVE,
    "train.parallel_runs": POSITIVE,
    "train.device": matches(r"auto|cpu|mps|cuda(:\d+)?", "'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'"),
    "eval.seeds": items(SEED, what="whole numbers >= 0", unique=True), "eval.bootstrap": POSITIVE,
    "eval.recall_k": items(POSITIVE, what="whole numbers greater than 0", unique=True), "eval.map_at_k": POSITIVE,
    "eval.batch_size": POSITIVE, "eval.parallel_runs": POSITIVE, "eval.comparison_bootstrap": POSITIVE,
    "eval.equivalence_margins": mapping(number(0, above=True), what="finite numbers greater than 0"),
    "eval.comparison_partitions": items(choice(*PARTITIONS), what="'internal' and/or 'external'", unique=True),
    "eval.class_descriptions": NON_NEGATIVE, "eval.class_descriptions_cache": NAME,
    "eval.strategies": items(NAME, what="strategy names", unique=True),
    "notes.strategies": items(NAME, what="note strategy names", unique=True),
}


def _value(cfg: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)  # NaN, Infinity and -1 as they were typed; text in quotes


# The note caches committed with the demo (relative to the repository): only a synthetic profile may write to them.
COMMITTED_CACHES = ("data/notes-cache-demo.sqlite", "data/class-descriptions-demo.sqlite")
_OWN_CACHE = {"notes.cache_path": "{work_dir}/notes/cache.sqlite",
              "eval.class_descriptions_cache": "{notes_dir}/class-descriptions.sqlite"}  # the paper profile's


def _cache_file(template: str, work_dir: str, notes_dir: str = "") -> Path | None:
    """A cache setting as the notes code resolves it ({work_dir}, {notes_dir} filled in; relative to the repository);
    None when the template does not format."""
    try:
        path = Path(template.format(work_dir=work_dir, notes_dir=notes_dir)).expanduser()
    except (KeyError, IndexError, ValueError):
        return None
    return path if path.is_absolute() else REPO_ROOT / path


def _committed(path: Path) -> str | None:
    """The committed cache `path` is (followed through links), else None."""
    for rel in COMMITTED_CACHES:
        for root in dict.fromkeys((REPO_ROOT, SOURCE_ROOT)):
            cache = root / rel
            same = os.path.realpath(path) == os.path.realpath(cache)
            if same or (path.exists() and cache.exists() and os.path.samefile(path, cache)):
                return rel
    return None


def committed_cache_problems(cfg: dict[str, Any]) -> list[str]:
    """One line per note cache setting of a non-synthetic profile that resolves to a committed demo cache."""
    if _value(cfg, "synthetic") != (True, False):
        return []
    work_dir = str(_value(cfg, "work_dir")[1] or "")
    problems, notes_dir = [], ""
    for key in ("notes.cache_path", "eval.class_descriptions_cache"):
        found, value = _value(cfg, key)
        path = _cache_file(value, work_dir, notes_dir) if found and isinstance(value, str) else None
        if key == "notes.cache_path" and path is not None:
            notes_dir = str(path.parent)
        committed = _committed(path) if path is not None else None
        if committed:
            problems.append(f"{key}={_shown(value)}: is the committed demo cache {committed}, and profile "
                            f"{cfg.get('profile', '?')!r} reads real data (synthetic: false), so what it writes "
                            f"there would land in a committed file; give it a cache of its own, e.g. --set "
                            f"{key}={_OWN_CACHE[key]} (the paper profile's default)")
    return problems


def config_problems(cfg: dict[str, Any], keys: list[str] | None = None) -> list[str]:
    """One line per setting of `cfg` whose value is not allowed (`keys`: only those), in RULES order; [] if none."""
    problems = []
    for key, rule in RULES.items():
        found, value = _value(cfg, key)
        if found and (keys is None or key in keys):
            needs = rule(value)
            if needs:
                problems.append(f"{key}={_shown(value)}: must be {needs}")
    split = _value(cfg, "data.split_fractions")[1]
    if isinstance(split, list) and not RULES["data.split_fractions"](split) and not math.isclose(sum(split), 1.0):
        problems.append(f"data.split_fractions={_shown(split)}: must sum to 1 (train, val, test)")
    sources = _value(cfg, "data.sources")[1]
    if isinstance(sources, list) and not sources:
        problems.append('data.sources=[]: must be "synthderm" or a non-empty list of dataset names')
    if keys is None:
        problems += committed_cache_problems(cfg)
    return problems


def check_values(cfg: dict[str, Any]) -> None:
    """Raise one ValueError listing every bad value of `cfg` (see `config_problems`)."""
    problems = config_problems(cfg)
    if problems:
        raise ValueError("\n".join(problems))
