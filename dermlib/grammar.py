"""The one grammar for strategies, parsed here only. A *note strategy* is a base strategy (the paper's M, M+P1,
M+P2, P3, or one of dermlib's controls D, M+G, M+Gs) or a combination of distinct ones: "A&B" concatenates each
sample's notes, "A|B" gives each sample one part's note (chosen by a stable hash of its id). A *training
strategy* is IMG, or note strategies joined by "," (each sample then has every listed strategy's note and a
training step draws one of them). Notes, training, evaluation, tables and figures all read strategies through
`note_parts` / `parse_strategy`."""

from __future__ import annotations

IMG = "Img"  # the image-only baseline: no note, no text branch
NOTE_STRATEGIES = ("M", "M+P1", "M+P2", "P3")  # the paper's note strategies: the base ones dermlib.notes renders
PAPER_STRATEGIES = (IMG, *NOTE_STRATEGIES)  # the paper's grid, baseline first
# Controls: dermlib's own base note strategies, never the paper's; templates, no LLM (dermlib.notes.controls): "D" the
# diagnosis alone; "M+G" the M note + a findings sentence from SynthDerm's drawn attributes through its annotation
# noise (a positive control); "M+Gs" those sentences shuffled within class, split and partition ("s": shuffled).
CONTROL_STRATEGIES = ("D", "M+G", "M+Gs")
GROUNDED_CONTROLS = ("M+G", "M+Gs")  # the controls that need SynthDerm's drawn attributes (real data has none)
BASE_STRATEGIES = (*NOTE_STRATEGIES, *CONTROL_STRATEGIES)  # every base note strategy the grammar accepts
CONCAT = "&"  # note strategies joined: each sample's notes concatenated
MIX = "|"  # note strategies joined: each sample takes one of them
EACH = ","  # training strategies joined: each sample has every listed note
MM_STRATEGIES = list(NOTE_STRATEGIES)


def note_parts(note: str) -> tuple[str, tuple[str, ...]]:
    """(mode, base strategies) of a note strategy: ("single", ("M",)), ("concat", ("M", "P3")) for "M&P3" or
    ("mix", ("M+P1", "P3")) for "M+P1|P3"; the paper's strategies and the controls are base strategies alike;
    a clear error for anything else."""
    name = note.strip()
    known = f"the paper's {list(NOTE_STRATEGIES)} or the controls {list(CONTROL_STRATEGIES)}"
    for sep, mode in ((CONCAT, "concat"), (MIX, "mix")):
        if sep in name:
            parts = tuple(p.strip() for p in name.split(sep))
            if any(p not in BASE_STRATEGIES for p in parts) or len(parts) < 2 or len(set(parts)) != len(parts):
                raise ValueError(f"strategy {note!r}: combine distinct base strategies ({known}) with "
                                 f"'{CONCAT}' (concatenate) or '{MIX}' (mix per sample), e.g. 'M&P3' or 'M+P1|P3'")
            return mode, parts
    if name not in BASE_STRATEGIES:
        raise ValueError(f"unknown strategy {note!r}; choose one of {known}, or a combination like "
                         f"'M&P3' (and '{IMG}' for the image-only baseline where a training strategy is asked for)")
    return "single", (name,)


def is_control(strategy: str) -> bool:
    """Whether a training or note strategy reads a control's notes ("D", "M+G", "M&M+Gs", "M,D"): such a result is
    labelled a control, never a paper strategy."""
    return any(p in CONTROL_STRATEGIES for note in parse_strategy(strategy) for p in note_parts(note)[1])


def parse_strategy(strategy: str) -> list[str]:
    """The note strategies a training strategy uses: "Img" -> [], "M+P1" -> ["M+P1"], "M,P3" -> ["M", "P3"],
    "M&P3" -> ["M&P3"]; every part is checked (`note_parts`)."""
    if strategy.strip() == IMG:
        return []
    parts = [s.strip() for s in strategy.split(EACH)]
    if not all(parts) or IMG in parts:
        raise ValueError(f"strategy {strategy!r}: use '{IMG}' alone, one note strategy, or note strategies joined "
                         f"by '{EACH}' (e.g. 'M,P3')")
    for part in parts:
        note_parts(part)
    return parts


def base_strategies(strategy: str) -> list[str]:
    """Every base note strategy a training strategy reads, in order of appearance ("M&P3,M+P1" -> M, P3, M+P1)."""
    out: list[str] = []
    for note in parse_strategy(strategy):
        out += [p for p in note_parts(note)[1] if p not in out]
    return out


def strategy_label(strategy: str) -> str:
    """A training strategy as a file-name part: "M,P3" -> "M_P3" (run folders)."""
    return strategy.replace(EACH, "_")
