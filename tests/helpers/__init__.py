"""What several test modules share, in one place; test modules import from here, never from each other.

- ``attacks``: a pickle that runs a command when loaded, for the refusal tests of every loader.
- ``browser``: sepconv's HTML pages opened in headless Chromium (Playwright), read back as a user sees them,
  and the checks every page must pass.
- ``cli``: ``sepconv ARGS`` run in this process, its exit code and output captured; one flag varied.
- ``costs``: an independent MAC count (layer formulas over hooked shapes), an ATen operator log, and
  multi-head attention's MACs by hand.
- ``ddp_driver``: a script (run by path, as DDP launchers re-run it) that trains on a few synthetic images.
- ``fields``: the gradient measurement of receptive fields that the field-rule tests compare against.
- ``html``: an HTML page's source read back (resources, images, table cells with their values, text).
- ``layers``: plain ``F.conv2d`` references with 'same' padding worked out again, rounding bounds, and
  randomized batch-norm statistics.
- ``memory``: ``sepconv`` in a child process told the machine has a given memory, and its peak use.
- ``optimize``: a sample ``plan.json`` of ``sepconv optimize`` (the demo's ``standard_cnn``), consistent with
  itself, that the command and its report are both tested against.
- ``project``: the project's files (as git sees them) copied into a scratch folder, for a build that must
  not write into the repository (the docs site, the wheel).
- ``site``: the documentation site built once from a copy of its sources, served on 127.0.0.1, and the
  faults (outside requests, console errors, undecoded images, broken links) of its pages in a browser.
- ``trained``: a demo-size model trained once per test session for the export tests.
- ``training``: ``sepconv train`` in a subprocess (signalled at a chosen step, or DDP-launched), in-process
  runs recorded and stopped step by step, and the bit-for-bit comparisons of the resume tests.
"""
