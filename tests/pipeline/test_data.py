"""The training side of the data contract: a manifest that does not fit the run is refused clearly."""

import json
import shutil
from pathlib import Path

import pytest

from pipeline.data import DataError, check_tokenizer, load_manifest


@pytest.fixture
def manifest_copy(tmp_path, pydocs_manifest):
    dst = tmp_path / "data"
    shutil.copytree(pydocs_manifest.parent, dst)
    return dst / "manifest.json"


def test_manifest_blend_and_vocab(pydocs_manifest):
    m = load_manifest(pydocs_manifest)
    prefixes, weights = m.blend("train")
    assert m.vocab_size == 4096 and prefixes
    assert all(Path(p + ".bin").is_file() and Path(p + ".idx").is_file() for p in prefixes)
    assert sum(weights) == pytest.approx(1.0)
    check_tokenizer(m, None)
    check_tokenizer(m, 4096)


def test_vocab_mismatch_is_refused(pydocs_manifest):
    with pytest.raises(DataError, match=r"model.vocab_size: 32000 does not match .*\(4096"):
        check_tokenizer(load_manifest(pydocs_manifest), 32000)


def test_changed_tokenizer_is_refused(manifest_copy):
    (manifest_copy.parent / "tokenizer.model").write_bytes(b"not the tokenizer the shards were written with")
    with pytest.raises(DataError, match="has sha256 .* but the shards were written with"):
        check_tokenizer(load_manifest(manifest_copy), None)


def test_missing_or_broken_manifest_and_shards(manifest_copy, tmp_path):
    with pytest.raises(DataError, match="does not exist .*make data"):
        load_manifest(tmp_path / "nope.json")
    raw = json.loads(manifest_copy.read_text())
    shard = manifest_copy.parent / (raw["splits"]["train"][0]["prefix"] + ".idx")
    shard.unlink()
    with pytest.raises(DataError, match=f"shard file {shard} .* is missing"):
        load_manifest(manifest_copy)
    manifest_copy.write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        load_manifest(manifest_copy)


def test_manifest_paths_must_stay_inside_its_directory(manifest_copy, tmp_path):
    raw = json.loads(manifest_copy.read_text())
    shard = raw["splits"]["train"][0]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for ext in (".bin", ".idx"):
        shutil.move(manifest_copy.parent / (shard["prefix"] + ext), outside / ("shard" + ext))
    shard["prefix"] = "../elsewhere/shard"
    manifest_copy.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"names train shard '\.\./elsewhere/shard', which resolves to .*outside "
                                        r"the manifest's directory .*data\.allow_external_paths: true"):
        load_manifest(manifest_copy)
    assert load_manifest(manifest_copy, allow_external=True).blend("train")[0][0].endswith("elsewhere/shard")
    raw["tokenizer"]["path"] = "/etc/passwd"
    manifest_copy.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="names the tokenizer '/etc/passwd'"):
        load_manifest(manifest_copy)
