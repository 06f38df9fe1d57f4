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

    # Load the bottom floor without the package __init__ (so that nothing it might import hides here):
    # a stand-in package with the same path lets `from sepconv.checks import ...` find the real files.
    code = (
        "import sys, types\n"
        "package = types.ModuleType('sepconv'); package.__path__ = [" + repr(sepconv.__path__[0]) + "]\n"
        "sys.modules['sepconv'] = package\n"
        "import sepconv.arithmetic, sepconv.checks, sepconv.errors, sepconv.formatting, sepconv.machine\n"
        "import sepconv.timing\n"
        "print(sepconv.arithmetic.separable_params(16, 32, 3, bias=False), 'torch' in sys.modules,\n"
        "      'numpy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "656 False False"


def test_import_sepconv_alone_imports_no_torch_and_its_names_resolve_on_use():
    # The package re-exports lazily (PEP 562): torch loads when a name that needs it is first used.
    code = (
        "import sys, sepconv\n"
        "print(sepconv.__version__, 'torch' in sys.modules, 'numpy' in sys.modules)\n"
        "print(set(sepconv.__all__) <= set(dir(sepconv)))\n"
        "layer = sepconv.SeparableConv2d(4, 8, 3)\n"
        "print('torch' in sys.modules, type(layer).__module__, sepconv.models.list_models()[0])\n"
        "print(all(getattr(sepconv, name) is not None for name in sepconv.__all__))\n"
        "try:\n"
        "    sepconv.no_such_name\n"
        "except AttributeError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "0.2.0 False False",
        "True",
        "True sepconv.layers.separable mobilenet_v1",
        "True",
        "module 'sepconv' has no attribute 'no_such_name'",
    ]


def test_lazy_packages_keep_their_names_and_import_nothing_heavy():
    # deploy, viz and io re-export lazily too; a function that shares its submodule's name (viz.diagram)
    # must still be the function.
    code = (
        "import sys, types, sepconv.deploy, sepconv.viz, sepconv.io\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'matplotlib'}))\n"
        "print(isinstance(sepconv.viz.diagram, types.FunctionType))\n"
        "names = [(p, n) for p in (sepconv.deploy, sepconv.viz, sepconv.io) for n in p.__all__]\n"
        "print([f'{p.__name__}.{n}' for p, n in names if getattr(p, n, None) is None or n not in dir(p)])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == ["[]", "True", "[]"]
