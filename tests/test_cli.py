"""What every command shares (`kcaptcha.cli.common`): the flags that read with a model, and the usage text."""

import json
import os
import stat
import subprocess
import sys

import pytest

from kcaptcha.cli import common

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = """bin/predict [--model=digits] dir/

Reads like bin/predict's --backend says; bin/train trains, and sbin/predict or bin/predictor are others.
"""


def test_the_usage_text_names_the_command_as_it_was_invoked(tmp_path, monkeypatch):
    launcher = tmp_path / "kcaptcha-predict"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    installed = common.usage_text(DOC, "kcaptcha.cli.predict", str(launcher))  # the shell passes the full path
    assert installed == DOC.replace("bin/predict [", "kcaptcha-predict [").replace("bin/predict's", "kcaptcha-predict's")
    assert common.usage_text(DOC, "kcaptcha.cli.predict", "bin/predict") == DOC  # typed as a path: kept as typed
    by_module = common.usage_text(DOC, "kcaptcha.cli.predict", os.path.join(REPO_ROOT, "kcaptcha", "cli", "predict.py"))
    assert by_module.startswith("python -m kcaptcha.cli.predict [--model=digits]")
    assert "bin/train trains" in by_module and "sbin/predict or bin/predictor" in by_module  # only this command


def test_an_installed_command_calls_itself_by_its_own_name_in_help(tmp_path):
    """`kcaptcha-predict --help` used to introduce itself as bin/predict."""
    launcher = tmp_path / "kcaptcha-predict"  # what pip writes for a console script
    launcher.write_text(f"#!{sys.executable}\nimport sys\nfrom kcaptcha.cli.predict import run\nsys.exit(run())\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=REPO_ROOT)
    helped = subprocess.run(["kcaptcha-predict", "--help"], capture_output=True, text=True, timeout=120, env=env,
                            cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert helped.stdout.lstrip().startswith("kcaptcha-predict [--model=digits]"), helped.stdout[:300]
    assert "bin/predict" not in helped.stdout and "--backend" in helped.stdout


@pytest.mark.parametrize("command, names", [("predict", ["model", "backend", "tta"]),
                                            ("evaluate", ["model", "backend", "tta"]),
                                            ("export", ["model"]), ("serve", ["backend", "tta"])])
def test_model_backend_and_tta_are_defined_once_for_every_command(command, names):
    """Each flag comes from `kcaptcha.cli.common`, so its meaning, default and help are the same everywhere."""
    probe = (f"import json; from absl import flags; import kcaptcha.cli.{command}; F = flags.FLAGS; "
             f"print(json.dumps({{n: [F.find_module_defining_flag(n), F[n].default, F[n].help] for n in {names!r}}}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {"model": ["kcaptcha.cli.common", "digits", common.MODEL_HELP],
                "backend": ["kcaptcha.cli.common", "auto", "<auto|keras|onnx|int8|float>: " + common.BACKEND_HELP],
                "tta": ["kcaptcha.cli.common", 8, common.TTA_HELP]}
    assert found == {name: expected[name] for name in names}
