"""The note strategies as data: versioned prompt templates in `prompts/`, rendered from one manifest row.

- `M`    deterministic template from metadata (no LLM); missing fields are left out, never shown as "nan".
- `M+P1` metadata + structured prompt: the LLM picks each lesion attribute from a fixed option list (JSON,
         validated against `m_p1.schema.<v>.json`), rendered after the M note.
- `M+P2` metadata + structured prompt for a sectioned narrative (history, examination, dermoscopy, impression).
- `P3`   free-form prompt with the diagnosis only.

Combinations (the paper's "next step"): `"A&B"` concatenates the parts' notes for every sample; `"A|B"` mixes
them, each sample taking one part chosen by a stable hash of its sample_id.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd

from dermlib.data.labels import CLASS_NAMES
from dermlib.data.schema import load_attributes

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
VOCABULARY_FILE = "vocabulary.v1.json"
_FIELD = re.compile(r"\{(\w+)\}")
_ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}

# name -> (template stem, template version, output kind, sees metadata)
_BASE: dict[str, tuple[str, str, str, bool]] = {
    "M": ("m", "v1", "template", True),
    "M+P1": ("m_p1", "v1", "json", True),
    "M+P2": ("m_p2", "v1", "json", True),
    "P3": ("p3", "v1", "text", False),
}


@dataclass(frozen=True)
class Strategy:
    """One base strategy: its template file, version and what the LLM must return."""

    name: str
    template: str
    version: str
    output: str  # "template" (no LLM) | "json" (validated against a schema) | "text" (free form)
    uses_metadata: bool
    sections: dict[str, str] = field(repr=False)
    schema: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def uses_llm(self) -> bool:
        return self.output != "template"

    @property
    def template_version(self) -> str:
        """The id stored in every cache key and result row, e.g. `m_p1.v1`."""
        return f"{self.template}.{self.version}"

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.name,)


@dataclass(frozen=True)
class Combo:
    """A combination of base strategies: `mode` "concat" (`A&B`) or "mix" (`A|B`)."""

    name: str
    parts: tuple[str, ...]
    mode: str

    @property
    def uses_llm(self) -> bool:
        return any(get_strategy(p).uses_llm for p in self.parts)

    @property
    def template_version(self) -> str:
        sep = "&" if self.mode == "concat" else "|"
        return sep.join(get_strategy(p).template_version for p in self.parts)


@lru_cache(maxsize=None)
def vocabulary() -> dict[str, list[str]]:
    """The constrained attribute vocabulary (option lists) shared by prompts, schemas and the audit."""
    data = json.loads((PROMPT_DIR / VOCABULARY_FILE).read_text())
    return {k: v for k, v in data.items() if k != "version"}


def _read_sections(path: Path) -> dict[str, str]:
    """Split a template file into its `[section]` blocks (lines starting with # are comments)."""
    if not path.exists():
        raise FileNotFoundError(f"prompt template {path} is missing (reinstall dermlib or restore notes/prompts/)")
    sections: dict[str, list[str]] = {}
    current = "render"  # a file without sections (M) is all render lines
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        head = re.fullmatch(r"\[(\w+)\]", line.strip())
        if head:
            current = head.group(1)
            continue
        sections.setdefault(current, []).append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def _resolve_schema(node: Any) -> Any:
    """Replace "@key" enum references in a schema file by the vocabulary's option list."""
    if isinstance(node, dict):
        return {k: _resolve_schema(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_schema(v) for v in node]
    if isinstance(node, str) and node.startswith("@"):
        return list(vocabulary()[node[1:]])
    return node


@lru_cache(maxsize=None)
def _base(name: str) -> Strategy:
    stem, version, output, uses_metadata = _BASE[name]
    sections = _read_sections(PROMPT_DIR / f"{stem}.{version}.txt")
    schema = None
    if output == "json":
        schema = _resolve_schema(json.loads((PROMPT_DIR / f"{stem}.schema.{version}.json").read_text()))
    return Strategy(name, stem, version, output, uses_metadata, sections, schema)


def get_strategy(name: str) -> Strategy | Combo:
    """A strategy by name: a base one ("M", "M+P1", "M+P2", "P3") or a combination ("M&P3", "M+P1|P3")."""
    name = name.strip()
    for sep, mode in (("&", "concat"), ("|", "mix")):
        if sep in name:
            parts = tuple(p.strip() for p in name.split(sep))
            if any(p not in _BASE for p in parts) or len(parts) < 2 or len(set(parts)) != len(parts):
                raise ValueError(f"strategy {name!r}: combine distinct base strategies {sorted(_BASE)} with "
                                 f"'&' (concatenate) or '|' (mix per sample), e.g. 'M&P3' or 'M+P1|P3'")
            return Combo(name, parts, mode)
    if name not in _BASE:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(_BASE)} or a combination like 'M&P3'")
    return _base(name)


STRATEGIES: dict[str, Strategy | Combo] = {n: get_strategy(n) for n in ["M", "M+P1", "M+P2", "P3", "M&P3", "M+P1|P3"]}


def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and pd.isna(value):
        return True
    return isinstance(value, (str, list)) and len(value) == 0


def _text(value: Any) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def metadata_fields(row: pd.Series | dict[str, Any], hidden_attributes: tuple[str, ...] = ("*",)) -> dict[str, str]:
    """The known metadata of one manifest row as template fields (missing or odd values are simply absent).

    `hidden_attributes` lists `attributes` keys kept out of notes and prompts (ground truth for the audit only);
    "*" hides them all (the default: SynthDerm's attributes are the image's ground truth, not metadata).
    """
    get = row.get
    out: dict[str, str] = {}
    age = get("age")
    if not _missing(age) and 0 < float(age) < 120:
        out["age"] = str(int(float(age)))
    sex = get("sex")
    if not _missing(sex) and str(sex) in ("male", "female"):
        out["sex"] = str(sex)
        out["sex_noun"] = "man" if sex == "male" else "woman"
    for key in ("site", "modality"):
        value = get(key)
        if not _missing(value):
            out[key] = str(value)
    fitz = get("fitzpatrick")
    if not _missing(fitz) and int(fitz) in _ROMAN:
        out["fitzpatrick"] = str(int(fitz))
        out["fitzpatrick_roman"] = _ROMAN[int(fitz)]
    label, raw = get("label"), get("label_raw")
    if not _missing(label) and str(label) in CLASS_NAMES:
        out["diagnosis"] = CLASS_NAMES[str(label)]
    elif not _missing(raw):
        out["diagnosis"] = str(raw)
    if "*" not in hidden_attributes:
        attrs = load_attributes(get("attributes"))
        shown = {k: v for k, v in sorted(attrs.items()) if k not in hidden_attributes and not _missing(v)}
        if shown:
            out["source_findings"] = "; ".join(f"{k.replace('_', ' ')}: {_text(v)}" for k, v in shown.items())
    return out


def render_lines(template: str, fields: dict[str, Any], joiner: str = " ") -> str:
    """Render template lines: per line, the first " || " alternative whose fields are all known; else drop it."""
    rendered = []
    for line in template.splitlines():
        for alternative in line.split(" || "):
            names = _FIELD.findall(alternative)
            if all(not _missing(fields.get(n)) for n in names):
                rendered.append(_FIELD.sub(lambda m: _text(fields[m.group(1)]), alternative).strip())
                break
    return joiner.join(rendered)


def metadata_block(fields: dict[str, str]) -> str:
    """The metadata as a bullet list for prompts (only known fields)."""
    labels = [("age", "Age: {} years"), ("sex", "Sex: {}"), ("site", "Anatomical site: {}"),
              ("fitzpatrick_roman", "Fitzpatrick skin type: {}"), ("modality", "Imaging: {}"),
              ("source_findings", "Recorded findings: {}"), ("diagnosis", "Diagnosis: {}")]
    return "\n".join("- " + text.format(fields[k]) for k, text in labels if k in fields)


def render_m(fields: dict[str, str]) -> str:
    """Strategy M: the deterministic metadata note."""
    return render_lines(_base("M").sections["render"], fields)


def build_messages(strategy: Strategy, fields: dict[str, str]) -> list[dict[str, str]]:
    """The chat messages of an LLM strategy for one row's metadata fields."""
    values = {f"options_{k}": ", ".join(v) for k, v in vocabulary().items()}
    values["diagnosis"] = fields.get("diagnosis", "a skin lesion of unknown type")
    values["metadata"] = metadata_block(fields) if strategy.uses_metadata else ""
    return [{"role": role, "content": _FIELD.sub(lambda m: values[m.group(1)], strategy.sections[role])}
            for role in ("system", "user") if role in strategy.sections]


def response_format(strategy: Strategy, backend: str) -> dict[str, Any] | None:
    """Structured-output request per backend: OpenAI/vLLM/Ollama `json_schema` (strict); llama.cpp `json_object` + schema."""
    if strategy.output != "json":
        return None
    if backend == "llamacpp":
        return {"type": "json_object", "schema": strategy.schema}
    name = strategy.template_version.replace(".", "_")
    return {"type": "json_schema", "json_schema": {"name": name, "schema": strategy.schema, "strict": True}}


def parse_response(strategy: Strategy, fields: dict[str, str], content: str | None,
                   finish_reason: str | None) -> tuple[str | None, str | None]:
    """Validate one LLM answer and render the note: returns (note, None) or (None, error)."""
    text = (content or "").strip()
    if not text:
        return None, f"empty answer (finish_reason={finish_reason})"
    if strategy.output == "text":
        if finish_reason == "length":  # cut at max_tokens: keep whole sentences only
            cut = max(text.rfind(". "), text.rfind(".\n"), text.rfind(".") if text.endswith(".") else -1)
            text = text[: cut + 1] if cut > 0 else text
        return text, None
    if finish_reason == "length":
        return None, "truncated JSON (finish_reason=length): raise max_tokens or shorten the schema"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON: {exc.msg} at char {exc.pos}"
    try:
        jsonschema.validate(data, strategy.schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return None, f"schema violation at {where}: {exc.message[:200]}"
    values = {k: (list(dict.fromkeys(v)) if isinstance(v, list) else " ".join(str(v).split())) for k, v in data.items()}
    if strategy.name == "M+P1":
        return render_m(fields) + " " + render_lines(strategy.sections["render"], values), None
    return render_lines(strategy.sections["render"], values, joiner="\n"), None
