"""Run the numbered notebooks in order through papermill (what `./run_all.sh` calls).

The plain demo profile executes the notebooks in place, so the committed notebooks show the SynthDerm run; other
profiles, the lab preset and any run with overrides write executed copies under `<work_dir>/notebooks/` (a variant's
work dir is a scratch folder: `dermlib.config.get_config`). Wall time per notebook is written
to `<figures_dir>/timings.csv`, and each executed notebook is rendered to static HTML under `<figures_dir>/html/`
(figures embedded) for readers without Jupyter.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from dermlib.config import REPO_ROOT, add_cli_arguments, config_from_cli, get_config
from dermlib.progress import progress_enabled
from dermlib.workdir import WorkDir

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebooks() -> list[Path]:
    """The numbered notebooks (`NN_<step>.ipynb`), in run order."""
    found = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks in {NOTEBOOK_DIR}")
    return found


def relative_paths(executed: Path) -> None:
    """Papermill records where it read and wrote a notebook; keep those paths relative to the repository."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        path = Path(meta.get(key) or "")
        if path.is_absolute() and path.is_relative_to(REPO_ROOT):
            meta[key] = str(path.relative_to(REPO_ROOT))
    nbformat.write(nb, executed)


def render_html(executed: list[Path], out_dir: Path) -> list[Path]:
    """Executed notebooks -> self-contained HTML pages (nbconvert, images inline, no code hidden)."""
    from nbconvert import HTMLExporter

    out_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    pages = []
    for nb in executed:
        body, _ = exporter.from_filename(str(nb))
        page = out_dir / f"{nb.stem}.html"
        page.write_text(body, encoding="utf-8")
        pages.append(page)
    return pages


def run(profile: str = "demo", only: str | None = None, parameters: dict | None = None,
        overrides: dict | None = None) -> pd.DataFrame:
    """Execute the notebooks of a profile (or the one whose number is `only`) with config `overrides` (checked
    here, before anything runs); return wall times."""
    import papermill as pm

    cfg = get_config(profile, overrides)
    chosen = [nb for nb in notebooks() if only is None or nb.name.startswith(f"{int(only):02d}_")]
    if not chosen:
        raise ValueError(f"no notebook numbered {only!r}; have {[nb.name for nb in notebooks()]}")
    # only the plain demo rewrites the committed notebooks; a variant's go to its scratch work dir (dermlib.workdir)
    plain = profile == "demo" and not overrides
    out_dir = NOTEBOOK_DIR if plain else WorkDir.of(cfg).notebooks
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for nb in chosen:
        print(f"== {nb.name} (profile {profile})", flush=True)
        start = time.perf_counter()
        pm.execute_notebook(
            str(nb), str(out_dir / nb.name),
            parameters={"profile": profile, **({"overrides": overrides} if overrides else {}), **(parameters or {})},
            cwd=str(NOTEBOOK_DIR), kernel_name="python3", log_output=False,
            progress_bar=progress_enabled(),  # papermill's tqdm over the cells, on a terminal only
        )
        rows.append({"notebook": nb.name, "profile": profile, "seconds": round(time.perf_counter() - start, 1)})
        relative_paths(out_dir / nb.name)
        print(f"   done in {rows[-1]['seconds']} s", flush=True)
    fig_dir = Path(cfg["figures_dir"])
    pages = render_html([out_dir / nb.name for nb in chosen], fig_dir / "html")
    print("== HTML:", ", ".join(str(p.relative_to(REPO_ROOT) if p.is_relative_to(REPO_ROOT) else p) for p in pages))
    timings = pd.DataFrame(rows)
    if only is None:
        fig_dir.mkdir(parents=True, exist_ok=True)
        timings.to_csv(fig_dir / "timings.csv", index=False)
    print(timings.to_string(index=False))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_cli_arguments(parser)
    parser.add_argument("--only", default=None, help="notebook number, e.g. 03")
    args = parser.parse_args(argv)
    if args.only is not None and not (args.only.isdigit() and any(nb.name.startswith(f"{int(args.only):02d}_")
                                                                   for nb in notebooks())):
        parser.error(f"--only takes a notebook number, one of {[nb.name[:2] for nb in notebooks()]}; got {args.only!r}")
    _, overrides = config_from_cli(parser, args)
    run(args.profile, args.only, overrides=overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
