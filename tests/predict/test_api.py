"""Predicting raw image files (dermlib.predict.api and its command line): the pixels are the training cache's for the
same file (build_cache is the reference), EXIF orientation is applied as PIL's exif_transpose does, the scores equal
the run's own (load_run, and zero-shot as dermlib.evaluate.probes computes it), bad files are named while the others
are still predicted, galleries of another model are refused, and `dermlib predict` works from a shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from dermlib.data.preprocess import ImageError, build_cache, load_cache, square_resize
from dermlib.data.schema import read_manifest
from dermlib.evaluate.export import export_embeddings, export_run
from dermlib.evaluate.probes import class_prompts, concept_phrases, directions, trained_classes
from dermlib.metrics import l2_normalise
from dermlib.predict import DermModel, GalleryError, load_image, predict
from dermlib.predict.__main__ import main
from dermlib.train.inference import encode, encode_texts, load_run

ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def model(exported: Path) -> DermModel:
    return DermModel.from_pretrained(exported)


@pytest.fixture(scope="module")
def files(work: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real SynthDerm files of the test split as a user has them: a JPEG, a PNG, and a non-square JPEG stored turned
    a quarter with an EXIF orientation tag (6: PIL's exif_transpose turns it upright); and bad inputs."""
    folder = tmp_path_factory.mktemp("images")
    manifest = read_manifest(work / "manifest.parquet")
    paths = manifest.loc[manifest["split"] == "test", "image_path"].head(3).tolist()
    out = {"jpeg": folder / "lesion one.jpg", "png": folder / "lesion_two.png", "exif": folder / "turned.jpg"}
    shutil.copy(paths[0], out["jpeg"])
    Image.open(paths[1]).convert("RGB").save(out["png"])
    upright = Image.open(paths[2]).convert("RGB")
    upright = upright.crop((0, 0, upright.width, upright.height * 2 // 3))  # wider than tall
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(out["exif"], exif=exif, quality=95)
    (folder / "notes.jpg").write_text("Clinical impression: melanoma.")  # a text file named .jpg
    (folder / "folder.png").mkdir()
    out |= {"text": folder / "notes.jpg", "missing": folder / "missing.png", "folder": folder / "folder.png"}
    return out


def _cache_reference(images: list[Path], run: Path, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The pixels the training cache holds for these files (build_cache, dermoscopic, size 32) and the run's
    softmax probabilities on them (load_run + encode)."""
    frame = pd.DataFrame({"sample_id": [f"u/{i}" for i in range(len(images))], "image_path": list(map(str, images)),
                          "modality": "dermoscopic", "attributes": "{}"})
    build_cache(frame, tmp_path / "cache", size=32)
    pixels = np.asarray(load_cache(tmp_path / "cache")[0])
    original, cfg = load_run(run)
    logits = encode(original, pixels, None, cfg)["image_logits"]
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return pixels, z / z.sum(axis=1, keepdims=True)


def test_predictions_are_the_runs_on_the_training_preprocessing(model: DermModel, files: dict[str, Path],
                                                                m_run: Path, tmp_path: Path) -> None:
    images = [files["jpeg"], files["png"], files["exif"]]
    pixels, reference = _cache_reference(images, m_run, tmp_path)
    preds = predict(model, images)
    for pred, pix, probs, image in zip(preds, pixels, reference, images):
        assert pred.error is None and pred.image == str(image) and pred.synthetic and pred.modality == "dermoscopic"
        np.testing.assert_array_equal(load_image(image, model.preprocessing)[0], pix)
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert list(pred.probabilities) == model.model_config.classes
        np.testing.assert_allclose(list(pred.probabilities.values()), probs, rtol=1e-5, atol=1e-6)
        assert pred.label == model.model_config.classes[int(probs.argmax())]
        assert pred.label_name == model.model_config.class_names[pred.label]
        assert pred.preprocessing["crop_method"].startswith("otsu")


def test_exif_orientation_is_applied_as_pil_does(model: DermModel, files: dict[str, Path]) -> None:
    size = model.preprocessing.image_size
    with Image.open(files["exif"]) as im:
        assert im.getexif()[ORIENTATION] == 6
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        stored = np.asarray(im.convert("RGB"))
    assert upright.shape[1] > upright.shape[0] and stored.shape[0] > stored.shape[1]
    pixels, info = load_image(files["exif"], model.preprocessing, "clinical")  # the whole image: no crop
    np.testing.assert_array_equal(pixels, square_resize(upright, size))
    assert not np.array_equal(pixels, square_resize(stored, size))  # the tag matters for this image
    assert "EXIF orientation applied" in info["converted"] and info["crop_method"] == "none"
    assert (info["orig_width"], info["orig_height"]) == (upright.shape[1], upright.shape[0])
    assert predict(model, [files["exif"]], modality="clinical")[0].preprocessing == info


def test_zero_shot_and_concepts_are_the_evaluations(model: DermModel, files: dict[str, Path], m_run: Path) -> None:
    """Scores are cosines to the ensembles of the saved prompts, as dermlib.evaluate.probes computes them."""
    original, cfg = load_run(m_run)
    pred = predict(model, [files["jpeg"]], concepts=4)[0]
    image = l2_normalise(encode(original, load_image(files["jpeg"], model.preprocessing)[0][None], None,
                                cfg)["image_emb"])[0]
    present = trained_classes(cfg)
    embed = lambda texts: encode_texts(original, texts, cfg)  # noqa: E731
    expected = directions(class_prompts(present), embed) @ image
    assert list(pred.zero_shot) == present
    np.testing.assert_allclose(list(pred.zero_shot.values()), expected, rtol=1e-4, atol=1e-5)
    phrases = concept_phrases()
    scores = directions(phrases, embed) @ image
    best = np.argsort(-scores, kind="stable")[:4]
    assert [c["concept"] for c in pred.concepts] == [list(phrases)[i] for i in best]
    np.testing.assert_allclose([c["score"] for c in pred.concepts], scores[best], rtol=1e-4, atol=1e-5)


def test_the_nearest_notes_of_a_gallery(model: DermModel, exported: Path, files: dict[str, Path]) -> None:
    gallery = exported / "embeddings_test.parquet"
    pred = predict(model, [files["png"]], gallery=gallery, k=3)[0]
    frame = pd.read_parquet(gallery)
    frame = frame[frame["note"].notna()].reset_index(drop=True)
    image = l2_normalise(model.embed_images(load_image(files["png"], model.preprocessing)[0][None]))[0]
    cosines = l2_normalise(np.stack(frame["text_emb"].to_numpy())) @ image
    best = np.argsort(-cosines, kind="stable")[:3]
    assert [n["sample_id"] for n in pred.neighbours] == frame["sample_id"].iloc[best].tolist()
    assert [n["rank"] for n in pred.neighbours] == [1, 2, 3] and {n["kind"] for n in pred.neighbours} == {"note"}
    np.testing.assert_allclose([n["score"] for n in pred.neighbours], cosines[best], rtol=1e-5, atol=1e-6)
    assert pred.neighbours[0]["note"] == frame["note"].iloc[best[0]]
    assert json.loads(json.dumps(pred.to_dict()))["neighbours"][0]["sample_id"] == pred.neighbours[0]["sample_id"]


def test_a_gallery_of_another_model_or_format_is_refused(model: DermModel, shared_run: Path, m_run: Path,
                                                         tmp_path: Path) -> None:
    other = export_run(shared_run, tmp_path / "shared")
    theirs = export_embeddings(other, "test", shared_run)
    with pytest.raises(GalleryError, match=rf"embeddings_test\.parquet: embeddings of model {shared_run.name}, "
                                           rf"not of {m_run.name}; write it with `dermlib export"):
        predict(model, [], gallery=theirs)
    plain = tmp_path / "plain.parquet"
    pd.read_parquet(theirs).to_parquet(plain)  # no dermlib metadata
    with pytest.raises(GalleryError, match=r"plain\.parquet: not a gallery of this dermlib's format"):
        predict(model, [], gallery=plain)


def test_an_image_only_model_finds_nearest_images(img_run: Path, files: dict[str, Path], tmp_path: Path) -> None:
    out = export_run(img_run, tmp_path / "img")
    gallery = export_embeddings(out, "test", img_run)
    pred = predict(DermModel.from_pretrained(out), [files["jpeg"]], gallery=gallery, k=2)[0]
    assert pred.zero_shot == {} and pred.concepts == [] and len(pred.probabilities) == len(pred.zero_shot) + 8
    assert [n["kind"] for n in pred.neighbours] == ["image", "image"] and "note" not in pred.neighbours[0]


def test_bad_images_are_named_and_the_others_still_predicted(model: DermModel, files: dict[str, Path]) -> None:
    names = ["jpeg", "text", "missing", "png", "folder"]
    preds = predict(model, [files[n] for n in names], on_error="keep")
    errors = {n: p.error for n, p in zip(names, preds)}
    assert errors["jpeg"] is None and errors["png"] is None
    assert errors["text"].startswith(f"{files['text']}: unreadable or truncated image")
    assert errors["missing"] == f"{files['missing']}: no such file"
    assert errors["folder"] == f"{files['folder']}: a folder, not an image file"
    alone = predict(model, [files["jpeg"]])[0].probabilities  # the batch it came in changes nothing
    np.testing.assert_allclose(list(preds[0].probabilities.values()), list(alone.values()), rtol=1e-5, atol=1e-6)
    assert preds[1].probabilities == {} and preds[1].label is None
    with pytest.raises(ImageError, match=f"^{files['text']}: unreadable"):
        predict(model, [files["jpeg"], files["text"]])


def test_the_command_line_prints_json_and_names_bad_files(exported: Path, files: dict[str, Path],
                                                          capsys: pytest.CaptureFixture) -> None:
    gallery = exported / "embeddings_test.parquet"
    code = main([str(files["jpeg"]), str(files["text"]), str(files["exif"]), "--model", str(exported), "--json",
                 "--gallery", str(gallery), "-k", "2", "--concepts", "3"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines() == [f"python -m dermlib.predict: error: {files['text']}: unreadable or truncated image: "
                                f"UnidentifiedImageError: cannot identify image file '{files['text']}'"]
    rows = json.loads(out)
    assert [r["image"] for r in rows] == [str(files[n]) for n in ("jpeg", "text", "exif")]
    assert rows[1]["error"] and rows[0]["error"] is None and len(rows[2]["neighbours"]) == 2
    assert len(rows[0]["concepts"]) == 3 and abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5
    assert main([str(files["png"]), "--model", str(exported)]) == 0
    text = capsys.readouterr().out
    assert "trained on synthetic data (SynthDerm)" in text and "probabilities" in text and "zero-shot" in text


def test_the_command_line_refuses_a_model_folder_of_another_version(exported: Path, files: dict[str, Path],
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "old"
    shutil.copytree(exported, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(SystemExit) as stopped:
        main([str(files["jpeg"]), "--model", str(folder)])
    err = capsys.readouterr().err.splitlines()
    assert stopped.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"python -m dermlib.predict: error: {folder / 'config.json'}: written by a newer dermlib")
    with pytest.raises(SystemExit) as stopped:
        main([str(files["jpeg"]), "--model", "no-such-model"])  # a bare name: a missing folder, not a Hub id
    assert stopped.value.code == 2 and capsys.readouterr().err.splitlines() == [
        "python -m dermlib.predict: error: no-such-model: no such model folder: export a run into it with "
        "`dermlib export RUN_DIR no-such-model`"]
    with pytest.raises(SystemExit) as stopped:
        main([str(files["jpeg"]), "--model", str(exported), "--gallery", str(tmp_path / "none.parquet")])
    assert stopped.value.code == 2 and "none.parquet: no such gallery file" in capsys.readouterr().err


def test_dermlib_predict_runs_from_a_shell(exported: Path, files: dict[str, Path]) -> None:
    script = Path(sys.executable).parent / "dermlib"  # the console entry point, where pip installed it
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dermlib.cli"]
    done = subprocess.run([*command, "predict", str(files["jpeg"]), str(files["png"]), "--model", str(exported),
                           "--modality", "clinical", "--json"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert [r["modality"] for r in rows] == ["clinical", "clinical"] and all(r["label"] for r in rows)
    assert all(r["preprocessing"]["crop_method"] == "none" for r in rows)
