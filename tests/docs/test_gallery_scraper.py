"""The docs' image scraper (``docs/_ext/sepconv_gallery.py``): a tutorial's page shows the pictures its
code blocks write, in the order written, and nothing that was in the folder before the tutorial ran."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from sphinx_gallery.scrapers import ImagePathIterator

SCRAPER = Path(__file__).resolve().parents[2] / "docs" / "_ext" / "sepconv_gallery.py"


def _scraper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sepconv_gallery", SCRAPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, mtime_s: int) -> None:
    path.write_bytes(b"picture")
    os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))


def test_pictures_a_block_writes_move_to_the_gallery_in_the_order_written(tmp_path):
    scraper = _scraper()
    tutorials, images = tmp_path / "tutorials", tmp_path / "auto_tutorials" / "images"
    tutorials.mkdir()
    images.mkdir(parents=True)
    conf = {"examples_dirs": ["tutorials"], "src_dir": str(tmp_path)}
    _write(tutorials / "kept.png", 100)  # in the folder before the tutorial runs: never shown
    scraper.note_present_pictures(conf, "tut_x.py", "before")
    block_vars = {
        "src_file": str(tutorials / "tut_x.py"),
        "image_path_iterator": ImagePathIterator(str(images / "sphx_glr_tut_x_{0:03}.png")),
    }
    _write(tutorials / "second.png", 300)
    _write(tutorials / "first.gif", 200)
    (tutorials / "notes.txt").write_text("not a picture")
    rst = scraper.written_pictures(None, block_vars, conf)

    assert sorted(path.name for path in images.iterdir()) == [
        "sphx_glr_tut_x_001.gif",
        "sphx_glr_tut_x_002.png",
    ]
    assert rst.index("sphx_glr_tut_x_001.gif") < rst.index("sphx_glr_tut_x_002.png")
    assert ":alt: first" in rst and ":alt: second" in rst and "kept" not in rst
    assert sorted(path.name for path in tutorials.iterdir()) == ["kept.png", "notes.txt"]
    # A block that writes nothing shows nothing; rewriting the old picture is writing it.
    assert scraper.written_pictures(None, block_vars, conf) == ""
    _write(tutorials / "kept.png", 400)
    assert "sphx_glr_tut_x_003.png" in scraper.written_pictures(None, block_vars, conf)
