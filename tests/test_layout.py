"""The package by stage: the runtime packages load without TensorFlow, and every package says what it owns."""

import os
import subprocess
import sys

import pytest

PACKAGES = ("data", "models", "training", "export", "reading", "serve", "cli")


@pytest.mark.parametrize("modules", [
    "kcaptcha.reading.recognizer kcaptcha.reading.evaluate kcaptcha.reading.tta",
    "kcaptcha.serve.app kcaptcha.serve.routes",
    "kcaptcha.data.folder kcaptcha.data.images kcaptcha.data.labels kcaptcha.export.saving",
])
def test_the_runtime_imports_no_tensorflow(repo_root, modules):
    code = (f"import sys, importlib\nfor m in {modules.split()!r}: importlib.import_module(m)\n"
            "import kcaptcha\nr = kcaptcha.load_model('digits')\n"
            "print(sorted(n for n in ('tensorflow', 'keras', 'tf2onnx') if n in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_opens_with_what_it_owns(repo_root, package):
    with open(os.path.join(repo_root, "kcaptcha", package, "__init__.py"), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith('"""') and len(text.split('"""')[1].split()) >= 8


def test_the_readme_layout_lists_every_module(repo_root):
    with open(os.path.join(repo_root, "README.md"), encoding="utf-8") as f:
        layout = f.read().split("## Layout", 1)[1]
    missing = []
    for package in PACKAGES:
        if f"{package}/" not in layout:
            missing.append(f"{package}/")
    for package in ("data", "training", "export", "reading"):
        for name in sorted(os.listdir(os.path.join(repo_root, "kcaptcha", package))):
            if name.endswith(".py") and name != "__init__.py" and name not in layout:
                missing.append(f"{package}/{name}")
    assert not missing, f"README's layout section lacks {missing}"
