"""kcaptcha.data.prepare on real files: every kind of bad input, the split, and nothing ever lost."""

import collections
import hashlib
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from kcaptcha import files
from kcaptcha.data import inventory
from kcaptcha.data import prepare as prep

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTCHA_IMAGES_V2 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "captcha_images_v2")


def run(input_dir, output_dir, config, **kwargs):
    kwargs.setdefault("split", (0.5, 0.25, 0.25))
    return prep.prepare(str(input_dir), str(output_dir), config, progress=False, **kwargs)


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, f), folder) for root, _, files in os.walk(folder) for f in files)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def assert_conserved(report, output_dir, fresh=True):
    """files in = train + val + test + rejected, in the report, the manifest and on disk."""
    assert report["files_in"] == sum(report["splits"].values()) + report["rejected_total"]
    manifest = json.loads((output_dir / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest) == report["files_in"]
    outputs = [entry["output"] for entry in manifest]
    assert len(set(outputs)) == len(outputs)
    for entry in manifest:
        assert sha(output_dir / entry["output"]) == entry["sha256"]
        if entry["reason"]:
            assert entry["output"].startswith(f"rejected/{entry['reason']}/") and entry["split"] is None
        else:
            assert entry["output"].startswith(f"{entry['split']}/")
            assert os.path.basename(entry["output"]).split("_", 1)[0] == entry["label"]
    if fresh:
        placed = [p for p in files_under(output_dir) if p not in ("manifest.json", "report.json")]
        assert len(placed) == report["files_in"]
    return {entry["path"]: entry for entry in manifest}


def png_bytes(folder):
    first = sorted(os.listdir(folder))[0]
    return (folder / first).read_bytes()


def test_a_clean_folder_is_split_by_the_fractions_and_seed(captcha_folder, smoke_config, tmp_path):
    report = run(captcha_folder, tmp_path / "out", smoke_config)
    assert report["rejected_total"] == 0 and report["splits"] == {"train": 6, "val": 3, "test": 3}
    entries = assert_conserved(report, tmp_path / "out")
    assert all(os.path.basename(e["output"]) == os.path.basename(e["path"]) for e in entries.values())
    again = run(captcha_folder, tmp_path / "again", smoke_config)
    other_seed = run(captcha_folder, tmp_path / "seed", smoke_config.replace(seed=1))
    assert files_under(tmp_path / "again") == files_under(tmp_path / "out")
    assert files_under(tmp_path / "seed") != files_under(tmp_path / "out")
    assert again["splits"] == other_seed["splits"]
    # report.json says who wrote it and how the split folders' names carry labels, so readers can tell.
    written = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert written["prepared_by"] == "kcaptcha prepare" and written["label_from"] == "prefix"
    assert inventory.read_report(str(tmp_path / "out" / "train")) == written
    assert inventory.read_report(str(captcha_folder)) is None


def _truncated_png(folder):
    data = png_bytes(folder)
    return data[: len(data) // 2]


def _tiff(folder):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(folder))).save(buffer, format="TIFF")
    return buffer.getvalue()


BAD_FILES = [
    ("0123_zero_bytes.png", lambda folder: b"", "empty_file"),
    ("01_truncated.png", _truncated_png, "truncated"),
    ("01_text.png", lambda folder: b"filename,label\nthis is text, not a PNG\n", "not_an_image"),
    ("01_tiff.png", _tiff, "unsupported_format"),
    ("0a_bad_characters.png", png_bytes, "bad_characters"),
    ("012_wrong_length.png", png_bytes, "bad_length"),
    ("0a.png", png_bytes, "bad_characters"),  # a name without '_' is all label, checked like any other
    ("_empty_label.png", png_bytes, "no_label"),
]


@pytest.mark.parametrize("name, make, reason", BAD_FILES, ids=[case[2] + ":" + case[0] for case in BAD_FILES])
def test_each_bad_file_is_quarantined_under_its_reason(captcha_folder, smoke_config, tmp_path, name, make, reason):
    data = make(captcha_folder)
    (captcha_folder / name).write_bytes(data)
    report = run(captcha_folder, tmp_path / "out", smoke_config)
    entries = assert_conserved(report, tmp_path / "out")
    assert report["rejected"] == {reason: 1} and report["accepted"] == 12
    assert entries[name]["reason"] == reason and entries[name]["output"] == f"rejected/{reason}/{name}"
    assert (tmp_path / "out" / "rejected" / reason / name).read_bytes() == data
    assert (captcha_folder / name).read_bytes() == data  # copied, not moved
    assert report["offenders"][reason] == [{"path": name, "message": entries[name]["message"]}]


@pytest.mark.parametrize("label_from, names", [
    ("prefix", {"01.png": "01", "23_x.png": "23", "_01.png": None, "x_01.png": "bad_characters"}),
    ("stem", {"01.png": "01", "23.png": "23", "0_1.png": "bad_characters", "x_01.png": "bad_characters"}),
    ("suffix", {"01.png": "01", "x_y_23.png": "23", "01_.png": None, "01_x.png": "bad_characters"}),
    (r"^cap-(?P<label>\d+)$", {"cap-01.png": "01", "cap-23.jpg": "23", "01_x.png": None, "cap-01-2.png": None}),
])
def test_label_from_decides_where_names_carry_labels(tmp_path, captcha_folder, smoke_config, label_from, names):
    raw = tmp_path / "raw"
    raw.mkdir()
    for index, name in enumerate(names):
        (raw / name).write_bytes(png_bytes(captcha_folder) + bytes([index]))
    report = run(raw, tmp_path / "out", smoke_config.replace(label_from=label_from), split=(1, 0, 0))
    entries = assert_conserved(report, tmp_path / "out")  # split folders are <label>_<name> whatever the rule
    for name, expected in names.items():
        entry = entries[name]
        if expected is None:
            assert entry["reason"] == "no_label" and entry["output"] == f"rejected/no_label/{name}"
            assert f"label_from=LabelRule({label_from!r})" in entry["message"]
        elif expected == "bad_characters":
            assert entry["reason"] == "bad_characters"
        else:
            assert entry["reason"] is None and entry["label"] == expected
            kept = name.startswith(f"{expected}_")  # already <label>_<name>
            assert entry["output"] == (f"train/{name}" if kept else f"train/{expected}_{name}")
    assert report["label_from"] == "prefix"


def test_upper_case_labels_need_lowercase(tmp_path, captcha_folder, smoke_config):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "AbCd_1.png").write_bytes(png_bytes(captcha_folder))
    (raw / "abcd_2.png").write_bytes(png_bytes(captcha_folder))
    config = smoke_config.replace(charset="abcd", min_length=4, max_length=4)
    report = run(raw, tmp_path / "strict", config)
    assert report["rejected"] == {"bad_characters": 1}
    assert "--lowercase" in report["offenders"]["bad_characters"][0]["message"]
    report = run(raw, tmp_path / "lower", config, lowercase=True)
    entries = assert_conserved(report, tmp_path / "lower")
    assert report["rejected_total"] == 0
    assert os.path.basename(entries["AbCd_1.png"]["output"]) == "abcd_AbCd_1.png"


def test_unicode_spaces_and_nested_folders(tmp_path, captcha_folder, smoke_config):
    raw = tmp_path / "raw dir"
    image = png_bytes(captcha_folder)
    for relative in ("a/01_same name.png", "b/c d/01_same name.png", "ü/0é_ünï cödé.png", "0e\u0301_nfd.png"):
        (raw / relative).parent.mkdir(parents=True, exist_ok=True)
        (raw / relative).write_bytes(image + relative.encode())  # distinct bytes: PNG ignores trailing data
    config = smoke_config.replace(charset="0123é")
    report = run(raw, tmp_path / "out", config, split=(1, 0, 0))
    entries = assert_conserved(report, tmp_path / "out")
    assert report["rejected_total"] == 0 and report["splits"]["train"] == 4
    assert entries["ü/0é_ünï cödé.png"]["label"] == "0é"
    assert entries["0e\u0301_nfd.png"]["label"] == "0é"  # NFD names (macOS) are normalised to NFC labels
    assert os.path.basename(entries["0e\u0301_nfd.png"]["output"]).startswith("0é_")
    # Nested folders are flattened; the second of two equal names gets a suffix.
    assert entries["a/01_same name.png"]["output"] == "train/01_same name.png"
    assert entries["b/c d/01_same name.png"]["output"] == "train/01_same name-1.png"


def test_content_not_extension_decides(tmp_path, captcha_folder, smoke_config):
    raw = tmp_path / "raw"
    raw.mkdir()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(captcha_folder))).convert("RGB").save(buffer, format="JPEG")
    (raw / "01_jpeg.png").write_bytes(buffer.getvalue())
    (raw / "01_no_extension").write_bytes(png_bytes(captcha_folder) + b"x")
    report = run(raw, tmp_path / "out", smoke_config)
    entries = assert_conserved(report, tmp_path / "out")
    assert report["accepted"] == 2
    assert entries["01_no_extension"]["output"].endswith("/01_no_extension.png")  # so kcaptcha.data.pipeline lists it


def test_sizes_are_only_reported_and_duplicates_stay_together(captcha_folder, smoke_config, tmp_path):
    for index, name in enumerate(sorted(os.listdir(captcha_folder))[:3]):
        (captcha_folder / f"{name.split('_')[0]}_copy{index}.png").write_bytes((captcha_folder / name).read_bytes())
    report = run(captcha_folder, tmp_path / "out", smoke_config.replace(width=100, height=60))
    entries = assert_conserved(report, tmp_path / "out")
    assert report["rejected_total"] == 0
    assert "size_mismatch" not in report["warnings"] and report["image_sizes"] == {"48x24": 15}  # train reads any
    assert report["warnings"]["duplicates"] == 3
    by_content = collections.defaultdict(set)
    for entry in entries.values():
        by_content[entry["sha256"]].add(entry["split"])
    assert all(len(splits) == 1 for splits in by_content.values())


def test_missing_empty_and_overlapping_folders_are_refused(tmp_path, captcha_folder, smoke_config):
    with pytest.raises(FileNotFoundError, match="not found.*missing"):
        run(tmp_path / "missing", tmp_path / "out", smoke_config)
    (tmp_path / "empty" / "only_a_subfolder").mkdir(parents=True)
    with pytest.raises(ValueError, match="No files found.*empty"):
        run(tmp_path / "empty", tmp_path / "out", smoke_config)
    with pytest.raises(ValueError, match="inside the input folder"):
        run(captcha_folder, captcha_folder / "prepared", smoke_config)
    with pytest.raises(ValueError, match="inside the input folder"):
        run(captcha_folder, captcha_folder, smoke_config)
    assert not (captcha_folder / "prepared").exists() and not (tmp_path / "out").exists()
    run(captcha_folder, tmp_path / "out", smoke_config)
    with pytest.raises(ValueError, match="own outputs"):
        run(tmp_path / "out" / "train", tmp_path / "out", smoke_config)
    for split in ("0.9,0.2,0.05", "0.5,0.5", "a,b,c", "1.5,-0.25,-0.25"):
        with pytest.raises(ValueError, match="split"):
            prep.parse_split(split)


def test_rerun_is_idempotent_and_never_overwrites(captcha_folder, smoke_config, tmp_path):
    (captcha_folder / "nolabel.png").write_bytes(b"junk")
    first = run(captcha_folder, tmp_path / "out", smoke_config)
    manifest = (tmp_path / "out" / "manifest.json").read_bytes()
    second = run(captcha_folder, tmp_path / "out", smoke_config)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == manifest
    assert first["written"] == 13 and second["written"] == 0 and second["already_present"] == 13
    assert_conserved(second, tmp_path / "out")
    # A stranger's file under a name this run wants is kept; the run's file gets a suffix.
    entries = json.loads(manifest)
    target = tmp_path / "out" / entries[0]["output"]
    target.write_bytes(b"someone else's")
    third = run(captcha_folder, tmp_path / "out", smoke_config)
    assert target.read_bytes() == b"someone else's"
    moved = json.loads((tmp_path / "out" / "manifest.json").read_text())[0]["output"]
    assert moved != entries[0]["output"] and moved.endswith("-1.png")
    assert third["warnings"]["stale_outputs"] == 1
    assert_conserved(third, tmp_path / "out", fresh=False)


def test_move_loses_nothing(captcha_folder, smoke_config, tmp_path):
    (captcha_folder / "sub").mkdir()
    (captcha_folder / "sub" / "0123_zero.png").write_bytes(b"")
    (captcha_folder / "sub" / "notes.txt").write_text("hello")
    before = sorted(sha(captcha_folder / p) for p in files_under(captcha_folder))
    report = run(captcha_folder, tmp_path / "out", smoke_config, move=True)
    assert_conserved(report, tmp_path / "out")
    assert files_under(captcha_folder) == ["sub/notes.txt"] and report["ignored"] == ["sub/notes.txt"]  # a document
    after = [sha(tmp_path / "out" / p) for p in files_under(tmp_path / "out") if not p.endswith(".json")]
    after.append(sha(captcha_folder / "sub" / "notes.txt"))
    assert sorted(after) == before and report["rejected"] == {"empty_file": 1}
    with pytest.raises(ValueError, match="--move"):
        run(captcha_folder, tmp_path / "out", smoke_config, move=True)


def test_labels_csv(captcha_folder, smoke_config, tmp_path):
    raw = tmp_path / "raw"
    (raw / "nested").mkdir(parents=True)
    image = png_bytes(captcha_folder)
    names = ("0123.png", "nested/3210.png", "01_from_name.png", "23.png", "_unlisted.png")
    for index, name in enumerate(names):
        (raw / name).write_bytes(image + bytes([index]))
    (raw / "labels.csv").write_text("0123.png,01\nnested/3210.png, 32\nghost.png,00\n", encoding="utf-8")
    report = run(raw, tmp_path / "out", smoke_config, labels_csv=str(raw / "labels.csv"))
    entries = assert_conserved(report, tmp_path / "out")
    assert report["files_in"] == 5  # the CSV itself is not an input
    assert entries["0123.png"]["label"] == "01" and entries["nested/3210.png"]["label"] == "32"  # the CSV wins
    assert os.path.basename(entries["nested/3210.png"]["output"]) == "32_3210.png"
    for unlisted in ("01_from_name.png", "23.png", "_unlisted.png"):  # a CSV labels only its rows, never a name
        assert entries[unlisted]["reason"] == "no_label" and "labels CSV" in entries[unlisted]["message"]
    assert report["rejected"] == {"no_label": 3} and report["warnings"]["csv_missing"] == 1
    assert report["offenders"]["csv_missing"] == [{"path": "ghost.png", "message": (
        "listed in the labels CSV but not in the folder")}]


def test_cli_with_auto_charset_and_flagfile(tmp_path, captcha_folder):
    (captcha_folder / "0 1_space.png").write_bytes(png_bytes(captcha_folder))
    command = [sys.executable, os.path.join(REPO_ROOT, "bin", "prepare"), "--flagfile=experiments/smoke.flags",
               f"--input_dir={captcha_folder}", f"--output_dir={tmp_path / 'out'}", "--charset=auto",
               "--split=0.8,0.2,0"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    labels = [name.split("_")[0] for name in os.listdir(captcha_folder) if " " not in name]
    assert report["charset"] == "".join(sorted(set("".join(labels))))
    assert report["rejected"] == {"bad_characters": 1} and report["splits"]["test"] == 0
    assert "Files in 13 = train 10 + val 2 + test 0 + rejected 1 (ok)" in result.stdout
    assert "0 1_space.png" in result.stdout
    failed = subprocess.run([*command[:2], f"--input_dir={tmp_path / 'missing'}", f"--output_dir={tmp_path}/o"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "error: Input folder not found" in failed.stderr


def test_the_captcha_images_v2_data_set(tmp_path, smoke_config):
    if not os.path.isdir(CAPTCHA_IMAGES_V2):
        pytest.skip(f"data set not present: {CAPTCHA_IMAGES_V2}")
    # As a new user runs it: no charset, no lengths, no CSV named; they come from the folder's labels.csv.
    report = run(CAPTCHA_IMAGES_V2, tmp_path / "out", smoke_config, split=(0.9, 0.05, 0.05), given=())
    assert_conserved(report, tmp_path / "out")
    assert report["charset"] == "2345678bcdefgmnpwxy" and (report["min_length"], report["max_length"]) == (5, 5)
    assert report["labels_csv"] == os.path.join(CAPTCHA_IMAGES_V2, "labels.csv")
    assert report["accepted"] == 1040 and report["splits"] == {"train": 936, "val": 52, "test": 52}
    assert report["rejected"] == {} and report["ignored"] == ["README.txt", "labels.csv"]
    assert report["warnings"] == {}


def test_kcaptcha_data_reads_the_prepared_folders(captcha_folder, smoke_config, tmp_path):
    raw = tmp_path / "raw"
    (raw / "sub dir").mkdir(parents=True)
    for index, name in enumerate(sorted(os.listdir(captcha_folder))):
        label = name.split("_")[0]
        target = raw / "sub dir" / f"{label}.png" if index % 2 else raw / f"{label.upper()}_{index}.bin"
        target.write_bytes((captcha_folder / name).read_bytes() + bytes([index]))
    (raw / "labels.csv").write_text("\n".join(f"sub dir/{p.name},{p.stem}" for p in (raw / "sub dir").iterdir()))
    report = run(raw, tmp_path / "out", smoke_config, labels_csv=str(raw / "labels.csv"), lowercase=True)
    entries = assert_conserved(report, tmp_path / "out")
    # With a CSV, an image it does not list is unlabelled, whatever its name says.
    assert report["accepted"] == 6 and report["rejected"] == {"no_label": 6}
    from kcaptcha.data import pipeline as data

    # The split folders' names are <label>_<name> whatever rule read the raw folder: read by prefix.
    found, by_suffix = {}, smoke_config.replace(label_from="suffix")
    for split in prep.SPLITS:
        if report["splits"][split]:
            paths, labels = data.labelled_files(str(tmp_path / "out" / split), by_suffix)
            found.update(zip((files.normalise_relative(os.path.relpath(p, tmp_path / "out")) for p in paths), labels))
    assert found == {e["output"]: e["label"] for e in entries.values() if e["split"]}


def test_labels_no_file_name_can_carry_go_in_each_splits_labels_csv(tmp_path):
    """Arithmetic labels (with a `?`) are never put in file names: each split gets a labels.csv instead."""
    from kcaptcha.config import Config
    from kcaptcha.data.folder import LabelledFolder
    from kcaptcha.data.generate import CaptchaRenderer
    from kcaptcha.reading import arithmetic

    raw = tmp_path / "raw"
    raw.mkdir()
    renderer = CaptchaRenderer(arithmetic.CHARSET, 5, 7, 80, 30, seed=2, style="arithmetic")
    rows = ["filename,label"]
    for index in range(20):
        label, image = renderer.render(index)
        image.save(raw / f"site-{index}.png")
        rows.append(f"site-{index}.png,{label}")
    (raw / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = Config(charset=arithmetic.CHARSET, min_length=5, max_length=7, width=80, height=30, data_workers=1)
    report = run(raw, tmp_path / "out", config, labels_csv=str(raw / "labels.csv"))
    assert sum(report["splits"].values()) == 20
    truths = {f"site-{index}.png": renderer.label(index) for index in range(20)}
    found = {}
    for split in prep.SPLITS:
        folder = tmp_path / "out" / split
        names = [name for name in os.listdir(folder) if name.endswith(".png")]
        assert all(files.name_carries(name) for name in names)  # as they came: site-<n>.png
        opened = LabelledFolder.open(str(folder))
        assert opened.source.csv_path == str(folder / "labels.csv")
        found.update({os.path.basename(p): label for p, label in zip(*opened.labelled())})
    assert found == truths
