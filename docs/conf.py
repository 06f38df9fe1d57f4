"""Sphinx configuration of sepconv's documentation site.

Built offline with warnings as errors (``python -m sphinx -W --keep-going docs docs/_build/html``, or
through ``tests/docs``): pages are MyST Markdown, the API reference is generated from the docstrings
(autodoc + napoleon + type hints), the tutorials are Python scripts that sphinx-gallery executes at
build time, and the CLI reference is generated from the argparse parsers.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import sepconv

project = "sepconv"
author = "the sepconv developers"
copyright = "2026, the sepconv developers"
release = sepconv.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
    "sphinx_gallery.gen_gallery",
    "sepconv_api",
    "sepconv_cli",
    "sepconv_math",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "tutorials/*.py", "tutorials/GALLERY_HEADER.rst", "**/*.ipynb", "conftest.py"]

# While writing, two switches make a build fast (neither is used by the tests, which build everything):
# SEPCONV_DOCS_API=0 builds only the top page of the API reference (SEPCONV_DOCS_API=REGEX: the pages of the modules
# it matches, e.g. 'sepconv.layers', and the packages above them), SEPCONV_DOCS_TUTORIALS=REGEX executes only the
# tutorials whose path matches (the others are shown without their output).
QUICK_API = os.environ.get("SEPCONV_DOCS_API", "1") == "0"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autosummary_generate = True
autosummary_ignore_module_all = False
# (docs/_ext/sepconv_api.py adds :show-inheritance: where a class has a base worth naming)
autodoc_default_options = {"members": True}
autodoc_member_order = "bysource"
# Types appear once, in the parameter list under each signature (sphinx-autodoc-typehints reads them from
# ``__init__`` and the functions' annotations): signatures stay short, and every parameter is listed with
# its type even where the docstring says nothing of it. (Sphinx's own "description" mode would take a
# class's parameter types from its attribute annotations: nn.Conv2d's ``bias: Tensor | None``.)
autodoc_typehints = "none"
always_document_param_types = True
typehints_fully_qualified = False
typehints_document_rtype = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"sepconv {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
# A browser asks every site for an icon: without one, each visit logs a 404 (tests/docs checks the console).
html_favicon = "images/favicon.svg"
html_math_renderer = "sepconv_text"  # formulas as text: MathJax would come from a CDN (_ext/sepconv_math.py)

nitpicky = False

sphinx_gallery_conf = {
    "examples_dirs": ["tutorials"],
    "gallery_dirs": ["auto_tutorials"],
    "filename_pattern": os.environ.get("SEPCONV_DOCS_TUTORIALS", r"/tut_"),
    "download_all_examples": False,
    "remove_config_comments": True,
    # A tutorial's pictures are the files it writes (sepconv draws with matplotlib's object API, which
    # pyplot's scraper cannot see): docs/_ext/sepconv_gallery.py moves each GIF or PNG a code block writes
    # into the gallery and shows it under the block. Animations are GIFs (sepconv.viz.animate_conv, or
    # a matplotlib animation's .save("name.gif")): matplotlib's HTML player loads its icons from a CDN,
    # so it stays off, and the site loads nothing from outside.
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib", "sepconv_gallery.written_pictures"),
    "reset_modules": ("matplotlib", "sepconv_gallery.note_present_pictures"),
    "abort_on_example_error": True,
    "show_memory": False,
    "plot_gallery": "True",
    # The execution-times pages load jQuery and DataTables from CDNs: no page may ask the network.
    "write_computation_times": False,
    # Examples in the API reference (as torchvision's): sphinx-gallery records which sepconv names each
    # tutorial uses; docs/_ext/sepconv_api.py puts a mini-gallery of them under each name it documents.
    "doc_module": ("sepconv",),
    "backreferences_dir": "reference/api/backreferences",
}
autodoc_inherit_docstrings = False  # an override of a Lightning or torch method would show their docs

# sphinx-autodoc-typehints calls an API that Sphinx 10 will remove; not ours to fix, and not a
# warning about these pages (Sphinx's own warnings still fail the build).
warnings.filterwarnings("ignore", message=r".*set_application.*", module=r"sphinx_autodoc_typehints.*")
