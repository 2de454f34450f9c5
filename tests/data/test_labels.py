"""The class codes table (dermlib.data.labels): every code of the logits' order, spelled out, in its group."""

from dermlib.data.labels import ISIC8, class_table, to_binary


def test_class_table_spells_out_every_code_in_logit_order() -> None:
    table = class_table()
    assert list(table["code"]) == ISIC8 and table["name"].is_unique and table["name"].str.len().min() > 5
    assert dict(zip(table["code"], table["group"]))["MEL"] == "malignant / pre-malignant"
    assert all((g == "benign") == (to_binary(c) == "benign") for c, g in zip(table["code"], table["group"]))
