"""A sphinx-gallery image scraper: the pictures a tutorial writes are shown on its page.

sepconv draws with matplotlib's object API and writes files (``sepconv.viz.animate_conv`` an animated
GIF, ``figure.savefig`` a PNG), which sphinx-gallery's matplotlib scraper cannot see: it only collects
pyplot's figures. sphinx-gallery runs each tutorial in the tutorial's own folder, so this scraper looks
there after each code block, moves every GIF or PNG the block wrote into the gallery's image folder
and shows them under the block, one after the other, in the order they were written. The page shows
exactly the files a reader gets by running the script, animations included, as plain images: no
JavaScript player, nothing loaded from outside the site (matplotlib's own HTML animations fetch their
button icons from a CDN, which is why ``matplotlib_animations`` stays off).

Only files written while the tutorial runs are taken: a picture kept in the folder, or one left there by
an interrupted build, stays where it is and never appears on a page.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from sphinx_gallery.scrapers import figure_rst

IMAGE_SUFFIXES = (".gif", ".png")

# The pictures (path -> modification time) the tutorial folders held when the current tutorial started.
_present_at_start: dict[Path, int] = {}


def _pictures(folder: Path, *, recursive: bool = False) -> dict[Path, int]:
    paths = folder.rglob("*") if recursive else folder.iterdir()
    return {
        path: path.stat().st_mtime_ns
        for path in paths
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.is_symlink()
    }


def note_present_pictures(gallery_conf: dict[str, Any], fname: str | None, when: str) -> None:
    """A ``reset_modules`` hook: before each tutorial runs, note the pictures its folders already hold.

    sphinx-gallery passes the tutorial's bare file name, so every gallery folder is noted.
    """
    if when != "before":
        return
    _present_at_start.clear()
    for examples in gallery_conf["examples_dirs"]:
        folder = Path(gallery_conf["src_dir"], examples).resolve()
        _present_at_start.update(_pictures(folder, recursive=True))


def written_pictures(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """The image scraper: move the pictures this block wrote to the gallery and return their reST."""
    folder = Path(block_vars["src_file"]).resolve().parent
    written = sorted(
        (mtime, path) for path, mtime in _pictures(folder).items() if _present_at_start.get(path) != mtime
    )
    parts = []
    for _, path in written:
        target = PurePosixPath(next(block_vars["image_path_iterator"])).with_suffix(path.suffix.lower())
        shutil.move(path, target)
        # One image per figure (not sphinx-gallery's side-by-side list), so an animation keeps its size;
        # the alt text is the name the tutorial gave the file.
        parts.append(figure_rst([target], gallery_conf["src_dir"], path.stem.replace("_", " ")))
    return "".join(parts)
