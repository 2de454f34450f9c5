"""The configuration (dermlib.config): two profiles with one key set, typed overrides with errors that name the
key, declared comparisons checked, and the one grammar of strategies that every step parses through."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermlib.config import get_config, parse_sets
from dermlib.grammar import (
    IMG,
    NOTE_STRATEGIES,
    PAPER_STRATEGIES,
    base_strategies,
    note_parts,
    parse_strategy,
    strategy_label,
)


def test_config_overrides_and_errors() -> None:
    cfg = get_config("demo", {"train.epochs": 2})
    assert cfg["train"]["epochs"] == 2 and cfg["profile"] == "demo" and cfg["synthetic"] is True
    assert get_config("paper")["synthetic"] is False
    with pytest.raises(KeyError, match="epochz"):
        get_config("demo", {"train.epochz": 2})
    with pytest.raises(ValueError, match="unknown profile"):
        get_config("laptop")


def _keys(node: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in node.items():
        out.add(prefix + key)
        if isinstance(value, dict) and key not in ("roots", "loss_weights", "max_tokens"):
            out |= _keys(value, f"{prefix}{key}.")
    return out


def test_both_profiles_have_one_key_set_and_overrides_are_typed() -> None:
    assert _keys(get_config("demo")) == _keys(get_config("paper"))
    for bad, message in [({"train.epochs": "three"}, "expected int, got str"),
                         ({"train.batch_size": 0}, "must be greater than 0"),
                         ({"notes.max_retries": "3"}, "expected int"),
                         ({"train.augment": 1}, "expected bool"),
                         ({"notes.limit": 2.5}, "expected null or int")]:
        with pytest.raises(ValueError, match=message):
            get_config("paper", bad)
    with pytest.raises(KeyError, match="not a dataset.*ham10000"):
        get_config("paper", {"data.roots.hamm10000": "/data"})
    with pytest.raises(KeyError, match="known keys of train:.*epochs"):
        get_config("paper", {"train.epoch": 3})
    assert get_config("paper", {"train.lr": 1, "notes.limit": None})["train"]["lr"] == 1
    assert parse_sets(["train.epochs=5", "data.roots.ham10000=/data/HAM", "eval.seeds=[0,1]"]) == {
        "train.epochs": 5, "data.roots.ham10000": "/data/HAM", "eval.seeds": [0, 1]}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["notes.limit"])


def test_malformed_comparisons_are_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="is not \\[metric, A, B\\]"):
        get_config("demo", {"eval.comparisons": [["kappa", "M"]]})
    with pytest.raises(ValueError, match="metric must be"):
        get_config("demo", {"eval.comparisons": [["accuracy", "M", "Img"]]})
    with pytest.raises(ValueError, match="eval.post_hoc_comparisons.*metric must be"):
        get_config("demo", {"eval.post_hoc_comparisons": [["accuracy", "M", "Img"]]})


def test_the_strategy_grammar() -> None:
    """Img, the paper's four note strategies, their combinations (& concatenates, | mixes per sample) and several
    note strategies of one run (joined by ','); anything else is refused with the rule."""
    assert IMG == "Img" and NOTE_STRATEGIES == ("M", "M+P1", "M+P2", "P3") and PAPER_STRATEGIES == (IMG, *NOTE_STRATEGIES)
    assert note_parts(" M+P2 ") == ("single", ("M+P2",))
    assert note_parts("M&P3") == ("concat", ("M", "P3")) and note_parts("M+P1|P3") == ("mix", ("M+P1", "P3"))
    for bad in ("M&X", "M&M", "Q", "Img", "M&"):
        with pytest.raises(ValueError, match="strategy"):
            note_parts(bad)
    assert parse_strategy("Img") == [] and parse_strategy("M+P1") == ["M+P1"]
    assert parse_strategy("M, P3") == ["M", "P3"] and parse_strategy("M&P3") == ["M&P3"]
    for bad in ("Img,M", "M,", "M,Q"):
        with pytest.raises(ValueError, match="strategy"):
            parse_strategy(bad)
    assert base_strategies("Img") == [] and base_strategies("M&P3,M+P1") == ["M", "P3", "M+P1"]
    assert base_strategies("M+P1|P3,P3") == ["M+P1", "P3"]
    assert strategy_label("M,P3") == "M_P3" and strategy_label("M+P1") == "M+P1"


def test_unknown_strategies_are_refused_by_the_config() -> None:
    """A typo in train.strategy, eval.strategies or notes.strategies stops get_config, naming the key."""
    assert get_config("demo", {"train.strategy": "M,P3", "eval.strategies": ["Img", "M&P3"],
                               "notes.strategies": ["M", "M+P1|P3"]})["train"]["strategy"] == "M,P3"
    for key, value in (("train.strategy", "M+P4"), ("eval.strategies", ["Img", "A"]), ("notes.strategies", ["Img"]),
                       ("notes.strategies", ["M,P3"])):
        with pytest.raises(ValueError, match=rf"^{key}: "):
            get_config("demo", {key: value})


def test_a_variant_works_in_scratch_and_shares_the_demo_data(monkeypatch, tmp_path) -> None:
    """Overrides (or the lab preset) never write the committed figures: the run works in
    <work_dir>/scratch/<variant>/, its figures there, and links the home work dir's data products while its data
    and notes settings are the home's (a different data setting gets a work dir of its own)."""
    from dermlib.workdir import REPO_ROOT, SHARED_ENTRIES

    monkeypatch.delenv("DERMLIB_FIGURES", raising=False)
    monkeypatch.setenv("DERMLIB_WORK", str(tmp_path / "work"))
    home = tmp_path / "work"
    plain = get_config("demo")
    assert (plain["work_dir"], plain["figures_dir"]) == (str(home), str(REPO_ROOT / "figures" / "demo"))
    variant = get_config("demo", {"train.epochs": 3, "eval.seeds": [0]})
    work = Path(variant["work_dir"])
    assert work.parent == home / "scratch" and work.name.startswith("demo-") and "epochs=3" in work.name
    assert variant["figures_dir"] == str(work / "figures")
    for name in SHARED_ENTRIES:
        assert (work / name).is_symlink() and (work / name).resolve() == (home / name).resolve()
    assert not (work / "results").exists()  # its results, records and notebooks are its own
    assert get_config("demo", {"eval.seeds": [0], "train.epochs": 3})["work_dir"] == str(work)  # order-free name
    assert get_config("demo", {"train.epochs": 4})["work_dir"] != str(work)
    own = Path(get_config("demo", {"data.seed": 1})["work_dir"])  # other images: nothing shared
    assert own.parent == home / "scratch" and not any((own / name).is_symlink() for name in SHARED_ENTRIES)
    allowed = Path(get_config("demo", {"notes.ask_limit": None})["work_dir"])  # asking more changes no note
    assert (allowed / "runs").is_symlink()
    lab = get_config("lab")
    assert lab["work_dir"] == str(home / "scratch" / "lab") and (Path(lab["work_dir"]) / "cache").is_symlink()
    assert lab["eval"]["seeds"] == [0, 1] and lab["data"] == plain["data"] and lab["notes"] == plain["notes"]
    mine = get_config("demo", {"work_dir": str(tmp_path / "mine")})  # the user's work dir: figures beside it
    assert mine["figures_dir"] == str(tmp_path / "mine" / "figures")
    chosen = get_config("demo", {"train.epochs": 3, "figures_dir": str(tmp_path / "f")})
    assert (chosen["work_dir"], chosen["figures_dir"]) == (str(home), str(tmp_path / "f"))
    with pytest.raises(ValueError, match="0 or more"):
        get_config("demo", {"notes.ask_limit": -1})


def test_an_exercise_variant_never_writes_into_its_base_run(monkeypatch, tmp_path) -> None:
    """`variant_config`: where get_config already gives a variant its own scratch folder, that is it; where the
    folders are named explicitly (as the notebook tests do), the variant goes to the base's scratch/ and still shares
    the base's data products while its data and notes settings are the base's."""
    from dermlib.config import variant_config
    from dermlib.workdir import SHARED_ENTRIES

    monkeypatch.delenv("DERMLIB_FIGURES", raising=False)
    monkeypatch.setenv("DERMLIB_WORK", str(tmp_path / "work"))
    assert variant_config("lab", {}, {"eval.seeds": [0, 1, 2]}) == get_config("lab", {"eval.seeds": [0, 1, 2]})
    assert variant_config("lab", {}, {}) == get_config("lab")
    monkeypatch.setenv("DERMLIB_FIGURES", str(tmp_path / "figures"))
    base = get_config("demo", {"train.epochs": 1})
    assert base["work_dir"] == str(tmp_path / "work")  # explicit folders: get_config keeps them for every variant
    variant = variant_config("demo", {"train.epochs": 1}, {"eval.exclude_own_pair": True})
    work = Path(variant["work_dir"])
    assert work.parent == tmp_path / "work" / "scratch" and "exclude_own_pair=true" in work.name
    assert variant["figures_dir"] == str(work / "figures") and variant["eval"]["exclude_own_pair"] is True
    assert variant["train"]["epochs"] == 1
    for name in SHARED_ENTRIES:
        assert (work / name).is_symlink() and (work / name).resolve() == (tmp_path / "work" / name).resolve()
    other = Path(variant_config("demo", {"train.epochs": 1}, {"data.n_per_source": 6})["work_dir"])
    assert other.parent == work.parent and other != work and not (other / "cache").exists()
    mine = variant_config("demo", {}, {"work_dir": str(tmp_path / "mine"), "figures_dir": str(tmp_path / "mine" / "f")})
    assert (mine["work_dir"], mine["figures_dir"]) == (str(tmp_path / "mine"), str(tmp_path / "mine" / "f"))


# ------------------------------------------------------------------ value checks (dermlib.config_checks; issue 27, item 8)
BAD_VALUES = [  # (--set text, what the one line of the error must say after "key=value: must be ")
    ("notes.max_retries=-1", "0 or more (a whole number)"),
    ("notes.limit=-1", "0 or more (a whole number); null: every row"),
    ("notes.ask_limit=-1", "0 or more (a whole number); null: no limit"),
    ("data.limit_per_source=-5", "greater than 0 (a whole number); null: no limit"),
    ("data.limit_per_source=0", "greater than 0 (a whole number); null: no limit"),
    ("notes.temperature=NaN", "from 0 to 2 (a finite number)"),
    ("notes.temperature=Infinity", "from 0 to 2 (a finite number)"),
    ("notes.temperature=2.5", "from 0 to 2 (a finite number)"),
    ("notes.timeout=0", "greater than 0 (a finite number)"),
    ("notes.timeout=-Infinity", "greater than 0 (a finite number)"),
    ("notes.concurrency=0", "greater than 0 (a whole number)"),
    ("notes.outage_after=0", "greater than 0 (a whole number)"),
    ("notes.stop_after_permanent=-1", "greater than 0 (a whole number)"),
    ("notes.max_tokens=0", "greater than 0 (a whole number), or a mapping to whole numbers greater than 0"),
    ('notes.max_tokens={"P3": -2}', "greater than 0 (a whole number), or a mapping to whole numbers greater than 0"),
    ("notes.backend=gpt", "one of 'openai', 'vllm', 'ollama', 'llamacpp'"),
    ("notes.base_url=localhost:8000", "an http:// or https:// URL with a host"),
    ("notes.api_key_env=MY-KEY", "an environment variable's name, or null"),
    ("notes.servers=0", "greater than 0 (a whole number)"),
    ("notes.strategies=[]", "a non-empty list of note strategy names, all different"),
    ("data.n_per_source=-1", "0 or more (a whole number)"),
    ("data.seed=-1", "0 or more (a whole number)"),
    ("data.image_size=0", "greater than 0 (a whole number)"),
    ("data.split_fractions=[0.7, 0.3]", "3 values of fractions >= 0 summing to 1 (train, val, test)"),
    ("data.split_fractions=[0.7, -0.1, 0.4]", "3 values of fractions >= 0 summing to 1 (train, val, test)"),
    ("data.split_fractions=[0.7, 0.2, 0.2]", None),  # every value allowed, the sum is not: its own line
    ("data.taxonomy=isic9", "one of 'isic8', 'binary'"),
    ("train.patience=-1", "greater than 0 (a whole number)"),
    ("train.batch_size=0", "greater than 0 (a whole number)"),
    ("train.batch_size=-64", "greater than 0 (a whole number)"),
    ("train.epochs=0", "greater than 0 (a whole number)"),
    ("train.lr=0", "greater than 0 (a finite number)"),
    ("train.lr=-0.001", "greater than 0 (a finite number)"),
    ("train.lr=NaN", "greater than 0 (a finite number)"),
    ("train.weight_decay=-1e-4", "0 or more (a finite number)"),
    ("train.dropout=1", "from 0 up to, not including, 1 (a finite number)"),
    ("train.temperature=0", "greater than 0 (a finite number)"),
    ("train.optimizer=sgd", "one of 'adam_amsgrad_l2', 'adamw'"),
    ("train.select_on=val_acc", "one of 'val_image_loss', 'val_kappa'"),
    ("train.pooling=max", "one of 'cls', 'pooler', 'mean'"),
    ("train.projection=joint", "one of 'separate', 'shared'"),
    ("train.image_encoder=resnet50", "one of 'densenet121', 'efficientnet_lite0'"),
    ("train.device=gpu", "'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'"),
    ("train.num_workers=-1", "0 or more (a whole number)"),
    ("train.trunk_adapter_rank=-1", "0 or more (a whole number)"),
    ("train.train_last_n_text_layers=-1", "0 or more (a whole number)"),
    ('train.loss_weights={"ce_image": 1.0}', "a mapping of ce_image, ce_text, l1, cosine, nt_xent to finite numbers"),
    ('train.loss_weights={"ce_image": -1, "ce_text": 1, "l1": 1, "cosine": 1, "nt_xent": 1}',
     "a mapping of ce_image, ce_text, l1, cosine, nt_xent to finite numbers >= 0"),
    ("eval.seeds=[]", "a non-empty list of whole numbers >= 0, all different"),
    ("eval.seeds=[0, 0]", "a non-empty list of whole numbers >= 0, all different"),
    ("eval.seeds=[-1]", "a non-empty list of whole numbers >= 0, all different"),
    ("eval.strategies=[]", "a non-empty list of strategy names, all different"),
    ("eval.bootstrap=0", "greater than 0 (a whole number)"),
    ("eval.recall_k=[]", "a non-empty list of whole numbers greater than 0, all different"),
    ("eval.recall_k=[0, 5]", "a non-empty list of whole numbers greater than 0, all different"),
    ("eval.map_at_k=0", "greater than 0 (a whole number)"),
    ("eval.batch_size=-1", "greater than 0 (a whole number)"),
    ("eval.comparison_bootstrap=0", "greater than 0 (a whole number)"),
    ("eval.comparison_partitions=[]", "a non-empty list of 'internal' and/or 'external', all different"),
    ("eval.comparison_partitions=[\"test\"]", "a non-empty list of 'internal' and/or 'external', all different"),
    ("eval.class_descriptions=-1", "0 or more (a whole number)"),
    ('eval.equivalence_margins={"kappa": 0, "map": 0.03, "cosine": 0.03}', "a mapping to finite numbers greater than 0"),
]


@pytest.mark.parametrize("setting, needs", BAD_VALUES, ids=[s for s, _ in BAD_VALUES])
def test_a_bad_value_stops_the_config_naming_key_value_and_range(setting: str, needs: str | None) -> None:
    """Every numeric, list and choice setting is checked when the config loads (`--set` parsed as run_all.sh
    does): one line naming the key, the value as typed and what it must be."""
    key, _, text = setting.partition("=")
    with pytest.raises(ValueError) as info:
        get_config("paper", parse_sets([setting]))
    message = str(info.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"{key}=")
    if needs is None:
        assert message.endswith("must sum to 1 (train, val, test)")
    else:
        assert message.endswith(f": must be {needs}") or f": must be {needs}" in message, message


def test_every_bad_value_gets_its_own_line_and_the_command_line_stops_at_once(capsys: pytest.CaptureFixture) -> None:
    import argparse

    from dermlib.config import add_cli_arguments, config_from_cli

    with pytest.raises(ValueError) as info:
        get_config("demo", {"notes.max_retries": -1, "train.patience": -1, "eval.seeds": []})
    assert str(info.value).splitlines() == ["notes.max_retries=-1: must be 0 or more (a whole number)",
                                            "train.patience=-1: must be greater than 0 (a whole number)",
                                            "eval.seeds=[]: must be a non-empty list of whole numbers >= 0, all different"]
    parser = argparse.ArgumentParser(prog="dermlib")
    add_cli_arguments(parser)
    with pytest.raises(SystemExit) as stop:
        config_from_cli(parser, parser.parse_args(["--set", "notes.temperature=NaN", "--set", "train.lr=0"]))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "notes.temperature=NaN: must be from 0 to 2" in err and "train.lr=0: must be" in err


@pytest.mark.parametrize("profile", ["demo", "lab", "paper"])
def test_every_committed_profile_and_the_test_overrides_pass_the_value_checks(profile: str) -> None:
    from dermlib.config_checks import RULES, config_problems
    from tests.conftest import TINY_OVERRIDES

    assert config_problems(get_config(profile)) == []
    assert config_problems(get_config(profile, TINY_OVERRIDES)) == []
    cfg = get_config(profile)
    checked = {key for key in RULES if key.split(".")[0] in cfg and key.split(".")[1] in cfg[key.split(".")[0]]}
    assert checked == set(RULES)  # every rule names a real key


def test_the_value_checks_choices_are_the_steps_own() -> None:
    """The choices are written out in dermlib.config_checks (below every step); they must stay the steps' lists."""
    from dermlib.config import BASE
    from dermlib.config_checks import BACKENDS, LOSS_TERMS, TAXONOMIES
    from dermlib.data.labels import TAXONOMIES as LABEL_TAXONOMIES
    from dermlib.notes.plan import BACKENDS as PLAN_BACKENDS

    assert BACKENDS == PLAN_BACKENDS and set(TAXONOMIES) == set(LABEL_TAXONOMIES)
    assert set(LOSS_TERMS) == set(BASE["train"]["loss_weights"])


def test_a_real_data_profile_may_not_write_into_the_committed_demo_caches(tmp_path: Path) -> None:
    """Issue 27: the paper profile pointed at data/notes-cache-demo.sqlite (or the demo's class descriptions) would
    write real-data-derived rows into a committed file: refused when the config loads, one line saying why and what
    to do; the demo and lab profiles, whose caches they are, and a cache of its own stay allowed."""
    from dermlib.config import REPO_ROOT

    notes, descriptions = "data/notes-cache-demo.sqlite", "data/class-descriptions-demo.sqlite"
    link = tmp_path / "cache.sqlite"
    link.symlink_to(REPO_ROOT / notes)
    for overrides, key, cache in [({"notes.cache_path": notes}, "notes.cache_path", notes),
                                  ({"notes.cache_path": str(REPO_ROOT / notes)}, "notes.cache_path", notes),
                                  ({"notes.cache_path": str(link)}, "notes.cache_path", notes),
                                  ({"eval.class_descriptions_cache": descriptions}, "eval.class_descriptions_cache",
                                   descriptions),
                                  ({"notes.cache_path": str(tmp_path / "c.sqlite"),  # {notes_dir} resolved too
                                    "eval.class_descriptions_cache": "{notes_dir}/" + "../" * len(tmp_path.parts)
                                    + str(REPO_ROOT / descriptions).lstrip("/")}, "eval.class_descriptions_cache",
                                   descriptions)]:
        with pytest.raises(ValueError) as info:
            get_config("paper", overrides)
        (line,) = str(info.value).splitlines()
        assert line.startswith(f"{key}=") and f"is the committed demo cache {cache}" in line, line
        assert "reads real data" in line and f"--set {key}=" in line
    both = str(pytest.raises(ValueError, get_config, "paper", {"notes.cache_path": notes,
                                                               "eval.class_descriptions_cache": descriptions}).value)
    assert len(both.splitlines()) == 2
    assert get_config("demo")["notes"]["cache_path"] == notes and get_config("lab")
    assert get_config("paper", {"notes.cache_path": str(tmp_path / "own.sqlite"),
                                "eval.class_descriptions_cache": "{notes_dir}/descriptions.sqlite"})
