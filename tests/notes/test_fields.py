"""What a note may say about a row (dermlib.notes.fields, note_fields.csv): every attribute a loader keeps is
decided, and no note field holds an image, lesion or patient id, a URL, a file name or licence text (on the fakes
here; on all rows of the real files in tests/data/test_real_data.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dermlib.data import load_source
from tests.fakes.manifests import check_note_fields


@pytest.mark.parametrize("source", ["ham10000", "bcn20000", "isic2019", "isic2020", "pad_ufes_20", "derm7pt_derm",
                                    "derm7pt_clinic", "ph2", "fitzpatrick17k", "ddi"])
def test_note_fields_of_fake_rows_hold_no_identifier_url_file_or_licence(
        source: str, fake_root: Callable[[str], Path]) -> None:
    """The fakes hold ids, URLs, file names and licence text in every column where the real files do."""
    check_note_fields(load_source(source, fake_root(source)), source)
