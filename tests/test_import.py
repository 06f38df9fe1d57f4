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


def test_arithmetic_does_not_import_torch():
    import sepconv.arithmetic

    # Load the file on its own (not through the package __init__, which imports torch).
    code = (
        "import sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('arithmetic', {sepconv.arithmetic.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['arithmetic'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(module.separable_params(16, 32, 3, bias=False), 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "656 False"
