"""Shared fixtures: the smoke config, a small trained model, a folder of generated captchas."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # commands run by tests stay as quiet as for users

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


def pytest_collection_modifyitems(config, items):
    """The `slow` tests run first: the README's `-n 2` then spreads the short ones around them, and no worker
    is left alone with a long test at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def smoke_config():
    from kcaptcha.flags import parse_flagfile

    cwd = os.getcwd()
    os.chdir(REPO_ROOT)  # flagfile includes resolve from the working directory
    try:
        return parse_flagfile(os.path.join("experiments", "smoke.flags"))
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="session")
def smoke_model_dir(tmp_path_factory, smoke_config):
    """A really trained (tiny, 40-step) model folder, shared by the tests that only read it."""
    from kcaptcha.training.train import train

    root = tmp_path_factory.mktemp("smoke_model")
    config = smoke_config.replace(max_steps=40, eval_every_steps=20, checkpoint_every_steps=20)
    summary = train(config, str(root / "run"), save_dir=str(root / "model"), verbose=0)
    return summary["saved_to"]


def write_captchas(folder, config, count, seed=7, first=0):
    """Writes `count` generated captchas as `<label>_<index>.png`; returns the paths."""
    from kcaptcha.data.generate import CaptchaRenderer

    os.makedirs(folder, exist_ok=True)
    renderer = CaptchaRenderer.from_config(config, seed=seed)
    paths = []
    for index in range(first, first + count):
        label, image = renderer.render(index)
        path = os.path.join(folder, f"{label}_{index}.png")
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def captcha_folder(tmp_path, smoke_config):
    """A folder of 12 labelled smoke-sized captcha PNGs."""
    folder = tmp_path / "captchas"
    write_captchas(str(folder), smoke_config, 12)
    return folder
