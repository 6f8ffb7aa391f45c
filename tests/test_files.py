"""kcaptcha.files: the label-from-name rule, finding images, labels CSVs and writes that never half-happen."""

import hashlib
import json
import os
import re

import pytest

from kcaptcha import files
from kcaptcha.files import LabelRule

REGEX = r"^img-(?P<label>[a-z0-9]+)-\d+$"

LABELS = [
    # (label_from, file path, the label it carries)
    ("prefix", "226md_001.png", "226md"),
    ("prefix", "226md.png", "226md"),  # a name without '_' is all label
    ("prefix", "ab_cd_ef.jpg", "ab"),  # before the FIRST '_'
    ("prefix", "some_dir/x_y/12_3.png", "12"),  # folder names never count
    ("prefix", "12.34_5.png", "12.34"),  # only the last extension goes
    ("prefix", "_nothing_before.png", None),
    ("stem", "226md.png", "226md"),
    ("stem", "0001_226md.png", "0001_226md"),
    ("stem", "a/b.c/12.34.png", "12.34"),
    ("suffix", "0001_226md.png", "226md"),
    ("suffix", "ab_cd_ef.jpg", "ef"),  # after the LAST '_'
    ("suffix", "226md.png", "226md"),
    ("suffix", "0001_.png", None),
    (REGEX, "img-226md-7.png", "226md"),
    (REGEX, "img-226md-7-extra.png", None),  # anchored: does not match
    (REGEX, "226md_001.png", None),
    (REGEX, "img-226md-7/other.png", None),  # searched in the file's name, not its folders
    (r"(?P<label>\d{4})", "captcha 1234 final.png", "1234"),  # searched, not matched from the start
    (r"^x(?P<label>\d*)$", "x.png", None),  # an empty label is no label
]


@pytest.mark.parametrize("label_from, path, label", LABELS, ids=[f"{r}:{p}" for r, p, _ in LABELS])
def test_label_rule_reads_each_kind(label_from, path, label):
    assert LabelRule.parse(label_from).label(path) == label


def test_label_rule_names_and_repr():
    for kind in LabelRule.NAMED:
        rule = LabelRule.parse(kind)
        assert rule.kind == kind and rule.pattern is None and repr(rule) == f"LabelRule({kind!r})"
    rule = LabelRule.parse(REGEX)
    assert rule.kind == "regex" and rule.pattern.pattern == REGEX and repr(rule) == f"LabelRule({REGEX!r})"


@pytest.mark.parametrize("label_from, says", [
    ("(?P<label>[0-9]+", r"regular expression \(missing \)"),  # re's own words say what is wrong
    ("[0-9]+", "a group named 'label'"),
    ("(?P<lbl>[0-9]+)", "a group named 'label'"),
    ("Prefix", "a group named 'label'"),  # the names are case sensitive; this is a regex without the group
    ("", "a group named 'label'"),
])
def test_a_bad_rule_is_a_clear_value_error(label_from, says):
    with pytest.raises(ValueError) as caught:
        LabelRule.parse(label_from)
    message = str(caught.value)
    assert "prefix, stem, suffix or a regular expression" in message
    assert f"Received: label_from={label_from!r}" in message
    assert re.search(says, message), message


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "images"
    for relative in ("b.png", "a.PNG", "notes.txt", "sub/c.jpg", "sub/deeper/d.gif", "A dir/e.bmp",
                     "sub/f.jpeg", "fake.png/g.png", "no_extension", "h.png.txt"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(relative.encode())
    return root


def test_list_images_is_recursive_sorted_and_by_extension(image_tree):
    found = [os.path.relpath(path, image_tree) for path in files.list_images(str(image_tree))]
    assert found == ["a.PNG", "b.png", os.path.join("A dir", "e.bmp"), os.path.join("fake.png", "g.png"),
                     os.path.join("sub", "c.jpg"), os.path.join("sub", "f.jpeg"),
                     os.path.join("sub", "deeper", "d.gif")]
    assert files.list_images(str(image_tree / "sub" / "deeper")) == [str(image_tree / "sub" / "deeper" / "d.gif")]


def test_list_images_names_a_missing_folder(tmp_path, image_tree):
    with pytest.raises(FileNotFoundError, match="Image folder not found.*missing"):
        files.list_images(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        files.list_images(str(image_tree / "b.png"))  # a file is not a folder


def test_collect_inputs_keeps_the_order_given(tmp_path, image_tree):
    notes, picture = str(image_tree / "notes.txt"), str(image_tree / "b.png")
    found = files.collect_inputs([str(image_tree / "sub"), notes, picture])
    assert found == [str(image_tree / "sub" / "c.jpg"), str(image_tree / "sub" / "f.jpeg"),
                     str(image_tree / "sub" / "deeper" / "d.gif"), notes, picture]  # a file named is taken as is
    with pytest.raises(FileNotFoundError, match="No such file or folder.*ghost.png"):
        files.collect_inputs([picture, str(tmp_path / "ghost.png")])
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("a")
    with pytest.raises(ValueError, match="No images .*texts"):
        files.collect_inputs([str(tmp_path / "texts")])
    with pytest.raises(ValueError, match="No images"):
        files.collect_inputs([])


def test_walk_files_lists_every_regular_file(image_tree):
    found = [os.path.relpath(path, image_tree) for path in files.walk_files(str(image_tree))]
    assert len(found) == 10 and "notes.txt" in found and "no_extension" in found
    assert found.index("b.png") < found.index(os.path.join("sub", "c.jpg"))  # a folder's files, then its folders


def test_sha256(tmp_path):
    (tmp_path / "x").write_bytes(b"kcaptcha" * 100_000)
    assert files.sha256(str(tmp_path / "x")) == hashlib.sha256(b"kcaptcha" * 100_000).hexdigest()


def test_atomic_writes_replace_whole_and_leave_no_temporary_files(tmp_path):
    target = tmp_path / "deep" / "folder" / "out.json"  # missing folders are made
    files.atomic_write_text(str(target), "x" * 10_000)
    files.atomic_write_text(str(target), "short ü")
    assert target.read_bytes() == "short ü".encode("utf-8")
    files.atomic_write_bytes(str(target), b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    files.atomic_write_json(str(target), {"b": 1, "a": "ü"})
    assert files.read_json(str(target)) == {"a": "ü", "b": 1}
    assert target.read_text(encoding="utf-8") == json.dumps({"a": "ü", "b": 1}, indent=2, ensure_ascii=False) + "\n"
    files.atomic_copy(str(target), str(tmp_path / "deep" / "copy.json"))
    assert (tmp_path / "deep" / "copy.json").read_bytes() == target.read_bytes()
    assert sorted(os.listdir(tmp_path / "deep" / "folder")) == ["out.json"]
    assert sorted(os.listdir(tmp_path / "deep")) == ["copy.json", "folder"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(TypeError):
        files.atomic_write_bytes(str(target), "not bytes")  # fails after the temporary file is opened
    with pytest.raises(RuntimeError):
        with files.atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    with pytest.raises(TypeError):
        files.atomic_write_json(str(tmp_path / "new.json"), {"not serialisable": object()})
    assert os.listdir(tmp_path) == ["out.txt"]


def test_create_new_refuses_to_overwrite(tmp_path):
    target = tmp_path / "new.bin"
    files.create_new(str(target), b"first")
    with pytest.raises(FileExistsError):
        files.create_new(str(target), b"second")
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["new.bin"]


def test_a_staging_folder_gets_the_permissions_of_any_new_folder(tmp_path):
    """A saved model is staged in a temporary folder and renamed into place: mkdtemp's 0o700 would leave
    it (a shipped model included) unreadable to every other user of the machine."""
    previous = os.umask(0o022)
    try:
        staging = files.staging_dir(str(tmp_path / "models" / "mine"))
    finally:
        os.umask(previous)
    assert os.path.dirname(staging) == str(tmp_path / "models") and not os.listdir(staging)
    assert os.stat(staging).st_mode & 0o777 == 0o755


def test_replace_folder_swaps_in_the_new_folder_whole(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")

    def write(staging):
        assert os.path.dirname(staging) == str(tmp_path)  # beside it: the renames stay on one file system
        with open(os.path.join(staging, "new.txt"), "w") as f:
            f.write("new")

    assert files.replace_folder(str(target), write) == str(target)
    assert os.listdir(target) == ["new.txt"] and os.listdir(tmp_path) == ["model"]  # no staging or old copy left
    files.replace_folder(str(tmp_path / "fresh"), write)  # no folder before: made
    assert os.listdir(tmp_path / "fresh") == ["new.txt"]


@pytest.mark.parametrize("fails", ["write", "rename"])
def test_a_failed_folder_replacement_keeps_the_old_folder(tmp_path, monkeypatch, fails):
    """Never without a model: neither a failed write nor a failed final rename may cost the old folder."""
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace, failed = os.replace, []

    def replace(source, destination):
        if fails == "rename" and destination == str(target) and not failed:  # the new folder's rename, once
            failed.append(source)
            raise OSError("disk gone")
        real_replace(source, destination)

    def write(staging):
        with open(os.path.join(staging, "new.txt"), "w") as f:
            f.write("new")
        if fails == "write":
            raise RuntimeError("crash while writing")

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises((OSError, RuntimeError)):
        files.replace_folder(str(target), write)
    assert os.listdir(target) == ["old.txt"] and (target / "old.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["model"]


def test_claim_free_name_numbers_a_taken_name_before_its_extension(tmp_path):
    taken = {"a.png", "a-1.png"}

    def claim(name):
        if name in taken:
            return False
        taken.add(name)
        return True

    assert [files.claim_free_name("out", "a.png", claim) for _ in range(2)] == ["a-2.png", "a-3.png"]
    assert files.claim_free_name("out", "b.tar.gz", claim) == "b.tar.gz"
    assert files.claim_free_name("out", "b.tar.gz", claim) == "b.tar-1.gz"
    with pytest.raises(FileExistsError, match="No free name for 'a.png' in out"):
        files.claim_free_name("out", "a.png", claim, tries=4)


@pytest.mark.parametrize("label, carried", [
    ("226md", True), ("0é", True), ("3×8=", True), ("3+8=?", False), ("a_b", False), ("a b", False),
    ("a*b", False), ("a:b", False), ("a/b", False), ("[ab]", False), ("", False),
])
def test_which_labels_a_file_name_can_carry(label, carried):
    assert files.name_carries(label) == carried
