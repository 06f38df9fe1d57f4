"""``import sepconv`` stays light: no optional heavy dependency is imported with it."""

import subprocess
import sys


def test_import_pulls_in_no_heavy_dependency():
    code = (
        "import sys, sepconv, sepconv.layers, sepconv.models, sepconv.arithmetic\n"
        "heavy = ('lightning', 'pytorch_lightning', 'onnxruntime', 'matplotlib', 'visdom', 'tensorboard', 'mlxtend')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
        # The probe sees a heavy import when there is one (tensorboard: the quickest of them to import).
        "import tensorboard\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[]", "['tensorboard']"]


def test_the_bottom_floor_does_not_import_torch():
    import sepconv

    # Load arithmetic, checks and errors without the package __init__ (which imports torch): a stand-in
    # package with the same path lets `from sepconv.checks import ...` find the real files.
    code = (
        "import sys, types\n"
        "package = types.ModuleType('sepconv'); package.__path__ = [" + repr(sepconv.__path__[0]) + "]\n"
        "sys.modules['sepconv'] = package\n"
        "import sepconv.arithmetic, sepconv.checks, sepconv.errors\n"
        "print(sepconv.arithmetic.separable_params(16, 32, 3, bias=False), 'torch' in sys.modules,\n"
        "      'numpy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "656 False False"
