"""Show formulas as their plain text, so that no page loads MathJax from a CDN.

Sphinx renders math with MathJax by default and adds MathJax's script, from a CDN, to every page that
has a formula: a page of this site would then ask the network for a script, and show nothing useful
offline. Our own pages write formulas as text or code; a docstring we re-export (``torch.nn``'s
``ChannelShuffle`` writes ``:math:`(N, C, *)```) would still bring MathJax in. This renderer writes a
formula's source as code instead (``(N, \\frac{C}{g}, g, *)``): readable, and entirely local.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes

RENDERER = "sepconv_text"


def _visit_inline(translator: Any, node: nodes.Element) -> None:
    translator.body.append(f'<code class="math">{translator.encode(node.astext())}</code>')
    raise nodes.SkipNode


def _visit_block(translator: Any, node: nodes.Element) -> None:
    translator.body.append(f'<div class="math"><pre>{translator.encode(node.astext())}</pre></div>')
    raise nodes.SkipNode


def setup(app: Any) -> dict[str, Any]:
    app.add_html_math_renderer(RENDERER, (_visit_inline, None), (_visit_block, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
