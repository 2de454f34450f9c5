"""Data figures (dermlib.data.plots): the class gallery and the attribute glossary show the right images."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dermlib.config import get_config  # noqa: E402
from dermlib.data import plots  # noqa: E402
from tests.fakes.images import manifest_and_cache  # noqa: E402


@pytest.fixture()
def cfg(tmp_path: Path) -> dict:
    return get_config("demo", {"figures_dir": str(tmp_path / "figures")})


def test_class_gallery_puts_internal_left_and_external_right(cfg: dict) -> None:
    manifest, images, index = manifest_and_cache()
    fig = plots.class_gallery(manifest, images, index, cfg, per_partition=2)
    grid = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_title() for ax in grid[0, :2]] == ["int_a", "int_a"]
    assert [ax.get_title() for ax in grid[0, 2:]] == ["ext_a", "ext_a"]
    plt.close("all")


def test_attribute_glossary_shows_only_images_with_the_attribute(cfg: dict) -> None:
    manifest, images, index = manifest_and_cache()
    fig = plots.attribute_glossary(manifest, images, index, cfg, per_value=2)
    values = [v for vs in plots.ATTRIBUTE_VALUES.values() for v in vs]
    grid = np.array(fig.axes).reshape(len(values), 2)
    streaks = values.index("streaks")
    shown = [ax.get_images()[0].get_array() for ax in grid[streaks] if ax.get_images()]
    with_streaks = {int(r) for sid, r in zip(index["sample_id"], index["row"]) if int(sid[1:]) % 2}
    assert len(shown) == 2 and all(any(np.array_equal(s, images[r]) for r in with_streaks) for s in shown)
    assert not grid[values.index("white")][0].get_images()  # nobody is white: the row stays empty
    plt.close("all")


def test_attribute_glossary_never_shows_an_image_twice(cfg: dict) -> None:
    """Every fake image has light brown or black + red + streaks: the rows compete for the same images, yet each
    image is drawn at most once, each row's images have its attribute, and the choice is the same every time."""
    from dermlib.data.schema import load_attributes

    manifest, images, index = manifest_and_cache()
    fig = plots.attribute_glossary(manifest, images, index, cfg, per_value=4)
    values = [(kind, v) for kind, vs in plots.ATTRIBUTE_VALUES.items() for v in vs]
    grid = np.array(fig.axes).reshape(len(values), 4)
    truth = dict(zip(manifest["sample_id"], manifest["attributes"].map(load_attributes)))
    shown = []
    for (kind, value), row in zip(values, grid):
        ids = [im.get_gid().removeprefix("sample:") for ax in row for im in ax.get_images()]
        assert all(value in truth[sid][kind] for sid in ids), value
        shown += ids
    assert len(shown) == len(set(shown)) == 16  # 4 light brown + the 12 black-red-streaks images, none twice
    for (kind, value), row in zip(values, grid):  # the gid names the image drawn
        for ax in row:
            for im in ax.get_images():
                cache_row = int(index.set_index("sample_id").loc[im.get_gid().removeprefix("sample:"), "row"])
                assert np.array_equal(im.get_array(), images[cache_row])
    picks = plots.glossary_picks(manifest, index, per_value=4)
    assert picks == plots.glossary_picks(manifest, index, per_value=4)
    assert [len(picks[v]) for v in values if v[1] in ("black", "red", "streaks")] == [4, 4, 4]
    labels = [t.get_text() for ax in grid[:, 0] for t in ax.texts]
    assert "network" in labels and "vessels" in labels and not any("(" in x for x in labels)
    plt.close("all")
