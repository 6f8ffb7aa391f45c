"""Self-training on unlabelled captchas: pseudo-labels read surely and alike, rounds, and what the model records."""

import json
import os

import pytest

from kcaptcha.export import saving
from kcaptcha.training import selftrain
from kcaptcha.training.train import train
from tests.conftest import write_captchas


@pytest.fixture(scope="module")
def digits_config():
    from kcaptcha.config import Config

    return Config(charset="0123456789", min_length=4, max_length=4, width=100, height=60, batch_size=16,
                  eval_every_steps=10, max_steps=10, pool_size=64, val_size=16, data_workers=1,
                  checkpoint_every_steps=10, self_training_rounds=1)


def test_pseudo_labels_are_the_readings_that_agree_in_warped_copies(digits_config, tmp_path):
    paths = write_captchas(str(tmp_path / "raw"), digits_config, 24, seed=5)
    kept, texts = selftrain.pseudo_labels(os.path.join(saving.SHIPPED_MODELS_DIR, "digits"), paths, digits_config)
    truths = {p: os.path.basename(p).split("_")[0] for p in paths}
    assert len(kept) >= 20 and sum(truths[p] == t for p, t in zip(kept, texts)) >= len(kept) - 1
    never, _ = selftrain.pseudo_labels(os.path.join(saving.SHIPPED_MODELS_DIR, "digits"), paths, digits_config,
                                       min_confidence=1.01)
    assert never == []


@pytest.mark.slow
def test_training_with_unlabelled_images_trains_on_their_pseudo_labels(digits_config, tmp_path):
    write_captchas(str(tmp_path / "labelled"), digits_config, 20, seed=3)
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for index, path in enumerate(write_captchas(str(tmp_path / "named"), digits_config, 30, seed=4)):
        os.rename(path, unlabelled / f"{index:03d}.png")  # names that carry no label
    config = digits_config.replace(train_dir=str(tmp_path / "labelled"), unlabelled_dir=str(unlabelled),
                                   init_from="digits")
    summary = train(config, str(tmp_path / "run"), save_dir=str(tmp_path / "model"), verbose=0)
    record = summary["self_training"]
    assert [r["round"] for r in record["rounds"]][:2] == [0, 1] and record["unlabelled"] == 30
    assert record["rounds"][1]["pseudo_labels"] >= 20  # the shipped digits model reads them surely
    pseudo = [n for n in os.listdir(tmp_path / "run" / "round1" / "train") if "_p" in n]
    assert len(pseudo) == record["rounds"][1]["pseudo_labels"]
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["training"]["self_training"]["pseudo_labels"] == record["pseudo_labels"]
    assert (tmp_path / "run" / "val").is_dir() and len(os.listdir(tmp_path / "run" / "val")) == 2


def test_self_training_is_refused_or_left_out_under_multi_worker(digits_config, tmp_path, capsys):
    paths = write_captchas(str(tmp_path / "site"), digits_config, 6, seed=2)
    rows = [f"{os.path.basename(p)},{os.path.basename(p)[:4]},,{'accepted' if i < 4 else 'unreviewed'}"
            for i, p in enumerate(paths)]
    (tmp_path / "site" / "labels.csv").write_text("filename,label,confidence,status\n" + "\n".join(rows) + "\n")
    one_machine = digits_config.replace(train_dir=str(tmp_path / "site"))
    assert selftrain.unlabelled_images(one_machine) == sorted(paths[4:])  # the unreviewed rows
    workers = one_machine.replace(strategy="multi_worker")
    assert selftrain.unlabelled_images(workers) == []  # every worker would pseudo-label into one folder
    assert "Not self-training on the 2 unlabelled images" in capsys.readouterr().out
    workers.validate()
    with pytest.raises(ValueError, match="unlabelled_dir is not read under strategy=multi_worker"):
        workers.replace(unlabelled_dir=str(tmp_path / "site")).validate()
    workers.replace(unlabelled_dir=str(tmp_path / "site"), self_training_rounds=0).validate()
