from pathlib import Path

import pytest

from transfuse.data import load_image_folder, load_manifest, load_source, split_source
from transfuse.data.split import check_classes
from transfuse.errors import DataError


def test_image_folder_reads_classes(image_folder: Path):
    src = load_image_folder(image_folder)
    assert src.classes == ["bag", "sandal", "trouser"]
    assert len(src) == 24 and src.counts() == {"bag": 8, "sandal": 8, "trouser": 8}


def test_non_image_files_are_ignored(image_folder: Path):
    (image_folder / "bag" / "notes.txt").write_text("not an image")
    assert len(load_image_folder(image_folder)) == 24


def test_empty_class_folder_is_an_error_unless_skipped(image_folder: Path):
    (image_folder / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*--skip-bad"):
        load_image_folder(image_folder)
    assert load_image_folder(image_folder, skip_bad=True).classes == ["bag", "sandal", "trouser"]


def test_missing_folder(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        load_source(tmp_path / "nope")


def test_manifest_with_split(tmp_path: Path, image_folder: Path):
    src = load_image_folder(image_folder)
    lines = ["path,label,split"] + [f"{Path(p).relative_to(tmp_path)},{lab},{'test' if i % 4 == 0 else 'train'}"
                                    for i, (p, lab) in enumerate(zip(src.items, src.labels))]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    m = load_source(manifest)
    assert m.items[0] == src.items[0] and m.splits is not None
    train, test = split_source(m)
    assert len(test) == 6 and len(train) == 18


def test_manifest_errors(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,x\n")
    with pytest.raises(DataError, match="path,label"):
        load_manifest(bad)
    bad.write_text("path,label,split\na.png,x,dev\n")
    with pytest.raises(DataError, match="split must be one of"):
        load_manifest(bad)


def test_split_is_stratified_and_seeded(image_folder: Path):
    src = load_image_folder(image_folder)
    a = split_source(src, test_size=0.25, seed=3)
    assert a == split_source(src, test_size=0.25, seed=3)
    assert a != split_source(src, test_size=0.25, seed=4)
    test_labels = [src.labels[i] for i in a[1]]
    assert {c: test_labels.count(c) for c in src.classes} == {"bag": 2, "sandal": 2, "trouser": 2}
    assert not set(a[0]) & set(a[1])


def test_single_example_class_is_rejected(image_folder: Path):
    for f in sorted((image_folder / "bag").glob("*.png"))[1:]:
        f.unlink()
    src = load_image_folder(image_folder)
    with pytest.raises(DataError, match=r"'bag' \(1\).*add images or remove the class"):
        check_classes(src)


def test_manifest_with_byte_order_mark_and_bad_encoding(tmp_path: Path):
    m = tmp_path / "excel.csv"
    m.write_bytes("\ufeffpath,label\na.png,x\nb.png,y\n".encode("utf-8"))
    assert load_manifest(m).labels == ["x", "y"]
    m.write_bytes(b"path,label\n\xff\xfe.png,x\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_manifest(m)
