"""The note strategies as data: versioned prompt templates in `prompts/`, rendered from one manifest row.

- `M`    deterministic template from metadata (no LLM); missing fields are left out, never shown as "nan".
- `M+P1` the M note, then lesion attributes the LLM picks from fixed option lists (JSON validated against
         `m_p1.schema.<v>.json`); the options are shuffled per image so decoding cannot default to a position.
- `M+P2` the M note, then a sectioned narrative (history, examination, dermoscopy, impression) whose lesion type,
         border, colours and structures are enum fields; prose that is not whole sentences is asked again.
- `P3`   free-form prompt with the diagnosis only, one generation per image (its own seed).

What a note may say about a row is `dermlib.notes.fields` (the whitelist `note_fields.csv`).

Controls (`dermlib.config.CONTROL_STRATEGIES`: dermlib's own, never the paper's; all templates, no LLM; rendered by
`dermlib.notes.controls`):
- `D`    the diagnosis alone (`d.v1.txt`): "Diagnosis: melanoma.".
- `M+G`  the M note, then a findings sentence grounded in SynthDerm's drawn attributes through its annotation noise
         (`m_g.v1.txt`): the deliberate, labelled exception to the whitelist (a positive control).
- `M+Gs` as M+G, the findings sentences shuffled among images of one class, split and partition.

Combinations (the paper's "next step"; the grammar is `dermlib.config.note_parts`): `"A&B"` concatenates the parts'
notes for every sample; `"A|B"` mixes them, each sample taking one part chosen by a stable hash of its sample_id.
"""

from __future__ import annotations


import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from dermlib.grammar import CONTROL_STRATEGIES, note_parts
from dermlib.notes.fields import as_text, is_missing

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
VOCABULARY_FILE = "vocabulary.v1.json"
_FIELD = re.compile(r"\{(\w+)\}")

# name -> (template stem, template version, output kind, sees metadata, other files its notes are rendered from)
_BASE: dict[str, tuple[str, str, str, bool, tuple[str, ...]]] = {
    "M": ("m", "v2", "template", True, ()),
    "M+P1": ("m_p1", "v2", "json", True, ("m.v2.txt", VOCABULARY_FILE)),
    "M+P2": ("m_p2", "v2", "json", True, ("m.v2.txt", VOCABULARY_FILE)),
    "P3": ("p3", "v1", "text", False, ()),
}
# The controls (all templates): name -> (template stem, version, variant, sees metadata, other files). M+Gs renders
# M+G's template with its findings shuffled (variant "shuffled": template version `m_g.v1+shuffled`).
_CONTROLS: dict[str, tuple[str, str, str, bool, tuple[str, ...]]] = {
    "D": ("d", "v1", "", False, ()),
    "M+G": ("m_g", "v1", "", True, ("m.v2.txt", VOCABULARY_FILE)),
    "M+Gs": ("m_g", "v1", "shuffled", True, ("m.v2.txt", VOCABULARY_FILE)),
}
PROSE_FIELDS = ("history", "examination", "dermoscopy", "impression")  # M+P2's free-text sections
PROSE_MAX_WORDS = 60


@dataclass(frozen=True)
class Strategy:
    """One base strategy: its template file, version, what the LLM must return and every file it depends on."""

    name: str
    template: str
    version: str
    output: str  # "template" (no LLM) | "json" (validated against a schema) | "text" (free form)
    uses_metadata: bool
    sections: dict[str, str] = field(repr=False)
    schema: dict[str, Any] | None = field(default=None, repr=False)
    files: tuple[str, ...] = field(default=(), repr=False)  # prompt files whose content defines the notes
    control: bool = False  # a control (dermlib.config.CONTROL_STRATEGIES), never a paper strategy
    variant: str = ""  # how a control renders its template differently (M+Gs: "shuffled")

    @property
    def uses_llm(self) -> bool:
        return self.output != "template"

    @property
    def template_version(self) -> str:
        """The id stored in every cache key and result row, e.g. `m_p1.v2` (a control's variant: `m_g.v1+shuffled`)."""
        return f"{self.template}.{self.version}" + (f"+{self.variant}" if self.variant else "")

    @property
    def digest(self) -> dict[str, str]:
        """sha256 of every file the notes are rendered from: editing any of them changes every cache key."""
        return {name: hashlib.sha256((PROMPT_DIR / name).read_bytes()).hexdigest()[:16] for name in self.files}


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
    if name in _CONTROLS:
        stem, version, variant, uses_metadata, extra = _CONTROLS[name]
        sections = _read_sections(PROMPT_DIR / f"{stem}.{version}.txt")
        files = tuple(sorted({f"{stem}.{version}.txt", *extra}))
        return Strategy(name, stem, version, "template", uses_metadata, sections, None, files, control=True,
                        variant=variant)
    stem, version, output, uses_metadata, extra = _BASE[name]
    sections = _read_sections(PROMPT_DIR / f"{stem}.{version}.txt")
    files = [f"{stem}.{version}.txt", *extra]
    schema = None
    if output == "json":
        schema_file = f"{stem}.schema.{version}.json"
        schema = _resolve_schema(json.loads((PROMPT_DIR / schema_file).read_text()))
        files.append(schema_file)
    return Strategy(name, stem, version, output, uses_metadata, sections, schema, tuple(sorted(set(files))))


def get_strategy(name: str) -> Strategy | Combo:
    """A note strategy by name (the grammar is `dermlib.config.note_parts`): a base one ("M", "M+P1", "M+P2", "P3",
    or a control "D", "M+G", "M+Gs") or a combination ("M&P3", "M+P1|P3")."""
    mode, parts = note_parts(name)
    return _base(parts[0]) if mode == "single" else Combo(name.strip(), parts, mode)


STRATEGIES: dict[str, Strategy | Combo] = {n: get_strategy(n) for n in ["M", "M+P1", "M+P2", "P3", "M&P3", "M+P1|P3"]}
CONTROLS: dict[str, Strategy | Combo] = {n: get_strategy(n) for n in CONTROL_STRATEGIES}  # never paper strategies


def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def option_order(sample_id: str) -> dict[str, list[str]]:
    """The vocabulary with every option list shuffled by a RNG seeded from the sample id: the same image gets the
    same order on every run and machine, different images different orders (no default list position)."""
    return {key: list(options) for key, options in _option_order(str(sample_id)).items()}


@lru_cache(maxsize=None)
def _option_order(sample_id: str) -> dict[str, tuple[str, ...]]:
    """`option_order`, computed once per sample id and process (a seeded generator per list is slow to build, and
    planning asks for each image's order once per structured strategy and pass)."""
    out = {}
    for key, options in vocabulary().items():
        rng = np.random.default_rng(stable_hash(f"options:{key}:{sample_id}"))
        out[key] = tuple(options[i] for i in rng.permutation(len(options)))
    return out


def request_schema(strategy: Strategy, options: dict[str, list[str]] | None) -> dict[str, Any] | None:
    """The strategy's schema with each enum in the given option order (the order the prompt lists)."""
    if strategy.schema is None or options is None:
        return strategy.schema

    def reorder(node: Any) -> Any:
        if isinstance(node, dict):
            if "enum" in node:
                wanted = set(node["enum"])
                match = next(v for v in options.values() if set(v) == wanted)
                return {**node, "enum": list(match)}
            return {k: reorder(v) for k, v in node.items()}
        return node

    return reorder(strategy.schema)


def render_lines(template: str, fields: dict[str, Any], joiner: str = " ") -> str:
    """Render template lines: per line, the first " || " alternative whose fields are all known; else drop it."""
    rendered = []
    for line in template.splitlines():
        for alternative in line.split(" || "):
            names = _FIELD.findall(alternative)
            if all(not is_missing(fields.get(n)) for n in names):
                rendered.append(_FIELD.sub(lambda m: as_text(fields[m.group(1)]), alternative).strip())
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


def build_messages(strategy: Strategy, fields: dict[str, str],
                   options: dict[str, list[str]] | None = None) -> list[dict[str, str]]:
    """The chat messages of an LLM strategy for one row's metadata fields (options in `option_order`)."""
    values = {f"options_{k}": ", ".join(v) for k, v in (options or vocabulary()).items()}
    values["diagnosis"] = fields.get("diagnosis", "a skin lesion of unknown type")
    values["metadata"] = metadata_block(fields) if strategy.uses_metadata else ""
    return [{"role": role, "content": _FIELD.sub(lambda m: values[m.group(1)], strategy.sections[role])}
            for role in ("system", "user") if role in strategy.sections]


def response_format(strategy: Strategy, backend: str,
                    options: dict[str, list[str]] | None = None) -> dict[str, Any] | None:
    """Structured-output request per backend: OpenAI/vLLM/Ollama `json_schema` (strict); llama.cpp `json_object` + schema."""
    if strategy.output != "json":
        return None
    schema = request_schema(strategy, options)
    if backend == "llamacpp":
        return {"type": "json_object", "schema": schema}
    name = strategy.template_version.replace(".", "_")
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def clean_prose(name: str, text: str) -> tuple[str, str | None]:
    """A free-text section as a whole sentence: (text with a final full stop, None) or (text, why it is refused).
    The schema sets no length cap (a cap cuts words in half), so a closed string is what the model meant to say;
    an empty or too long section is refused and asked again ("Unremarkable." is a whole section)."""
    text = " ".join(text.split()).strip(" ,;:-")
    words = text.split()
    if not words:
        return text, f"section {name!r} is empty"
    if len(words) > PROSE_MAX_WORDS:
        return text, f"section {name!r} is longer than {PROSE_MAX_WORDS} words"
    if not re.search(r"[.!?][\"')]*$", text):
        text += "."
    return text[0].upper() + text[1:], None


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
    import jsonschema  # imported here: its format checkers take seconds to load, and reading notes needs none

    try:
        jsonschema.validate(data, strategy.schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return None, f"schema violation at {where}: {exc.message[:200]}"
    return render_answer(strategy, fields, data)


def render_answer(strategy: Strategy, fields: dict[str, str], data: dict[str, Any] | str) -> tuple[str | None, str | None]:
    """The note of a structured strategy from its answer (the JSON text or its data, already validated against the
    schema its request carried): the M note, then the [render] section filled with the answer's values. Rendering
    is local, so an edited template re-renders stored answers instead of asking again (`dermlib.notes.synth`)."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            return None, f"malformed JSON: {exc.msg} at char {exc.pos}"
    values = {k: (list(dict.fromkeys(v)) if isinstance(v, list) else " ".join(str(v).split())) for k, v in data.items()}
    if strategy.name == "M+P1":
        return render_m(fields) + " " + render_lines(strategy.sections["render"], values), None
    for name in PROSE_FIELDS:
        if name in values:
            values[name], error = clean_prose(name, values[name])
            if error:
                return None, error
    return render_m(fields) + "\n" + render_lines(strategy.sections["render"], values, joiner="\n"), None
