"""Existing megatron .bin/.idx shards as a source: listed where they are (not copied), checked against
the tokenizer (dtype, ids, decode/encode), mixed with other sources, and a tiny run trains on them."""

import json
import shutil

import pytest

from data_prep import prepare
from data_prep.config import MegatronSource, PrepareConfig, SourceConfig, TokenizerConfig
from data_prep.errors import DataPrepError
from tests.data_prep.helpers import make_texts, read_split, write_jsonl
from tests.data_prep.test_roundtrip import _large_vocab_model
from tests.helpers import launch, scalars


@pytest.fixture(scope="module")
def old_shards(pydocs_manifest, tmp_path_factory):
    """Shards as Megatron-LM's preprocess_data.py names them (<prefix>_text_document), in a folder of
    their own, with the tokenizer they were made with."""
    d = tmp_path_factory.mktemp("old")
    m = json.loads(pydocs_manifest.read_text())
    for split, name in (("train", "web_0_text_document"), ("train", "web_1_text_document"),
                        ("valid", "heldout_text_document")):
        src = pydocs_manifest.parent / m["splits"][split][0]["prefix"]
        for ext in (".bin", ".idx"):
            shutil.copyfile(f"{src}{ext}", d / f"{name}{ext}")
    shutil.copyfile(pydocs_manifest.parent / "tokenizer.model", d / "tokenizer.model")
    return d


def _config(out, d, model=None, **megatron) -> PrepareConfig:
    megatron = megatron or {"prefix": str(d / "web_*_text_document"),
                            "valid_prefix": str(d / "heldout_text_document")}
    return PrepareConfig(output_dir=str(out), tokenizer=TokenizerConfig(model=str(model or d / "tokenizer.model")),
                         sources=[SourceConfig(name="old", megatron=MegatronSource(**megatron))])


def test_existing_shards_listed_in_place_and_train(tmp_path, old_shards, pydocs_manifest, capsys):
    m_path = prepare(_config(tmp_path / "out", old_shards))
    m = json.loads(m_path.read_text())
    assert [s["prefix"] for s in m["splits"]["train"]] == [str(old_shards / f"web_{i}_text_document")
                                                           for i in (0, 1)]
    assert [s["prefix"] for s in m["splits"]["valid"]] == [str(old_shards / "heldout_text_document")]
    assert not (tmp_path / "out" / "train").exists()  # nothing copied
    pydocs = json.loads(pydocs_manifest.read_text())
    assert m["sources"][0]["documents"] == 2 * pydocs["splits"]["train"][0]["documents"] + pydocs["splits"][
        "valid"][0]["documents"]
    assert read_split(m_path, "valid") == [("old", ids) for _, ids in read_split(pydocs_manifest, "valid")]
    prepare(_config(tmp_path / "out", old_shards))
    assert "up to date" in capsys.readouterr().out

    launch("tiny_dyt", ["train.steps=3", "train.log_interval=1", "train.eval_interval=3", "train.eval_iters=1",
                        "schedule.warmup_steps=1", f"output_dir={tmp_path}", "name=old", f"data.manifest={m_path}",
                        "data.allow_external_paths=true"])  # the shards stay where they are: trusted explicitly
    assert sorted(scalars(tmp_path / "old", "train/loss")) == [1, 2, 3] and scalars(tmp_path / "old", "val/loss")


def test_mixed_with_a_corpus_source(tmp_path, old_shards):
    cfg = _config(tmp_path / "out", old_shards)
    cfg.sources.append(SourceConfig(name="new", paths=[str(write_jsonl(tmp_path / "n.jsonl", make_texts(50)))],
                                    weight=2.0))
    m = json.loads(prepare(cfg).read_text())
    assert [s["source"] for s in m["splits"]["train"]] == ["old", "old", "new"]
    assert m["splits"]["train"][2]["prefix"] == "train/new-00000" and m["sources"][1]["weight"] == 2.0


def test_wrong_tokenizer_or_damaged_shards_are_clear_errors(tmp_path, old_shards, small_tokenizer):
    key = r"data\.prepare\.sources\[0\]\.megatron"
    with pytest.raises(DataPrepError, match=key + r": .*(another tokenizer)"):
        prepare(_config(tmp_path / "a", old_shards, small_tokenizer))  # 600 pieces, not the shards' 4096
    big = tmp_path / "big.model"
    big.write_bytes(_large_vocab_model((old_shards / "tokenizer.model").read_bytes(), 66_000))
    with pytest.raises(DataPrepError, match=key + r": .*holds uint16 ids, but the tokenizer's 70096 ids are int32"):
        prepare(_config(tmp_path / "b", old_shards, big))
    cut = tmp_path / "cut"
    cut.mkdir()
    for ext in (".bin", ".idx"):
        shutil.copyfile(old_shards / f"web_0_text_document{ext}", cut / f"x{ext}")
    (cut / "x.bin").write_bytes((cut / "x.bin").read_bytes()[:-10])
    with pytest.raises(DataPrepError, match=key + r": .*x.bin has \d+ bytes, its index expects"):
        prepare(_config(tmp_path / "c", old_shards, prefix=str(cut / "x")))
    with pytest.raises(DataPrepError, match=key + r"\.prefix: .*matches no megatron shard"):
        prepare(_config(tmp_path / "d", old_shards, prefix=str(old_shards / "nope_*")))
    cfg = _config(tmp_path / "e", old_shards)
    cfg.tokenizer = TokenizerConfig(vocab_size=600)
    with pytest.raises(DataPrepError, match=r"sources\[0\]\.megatron: existing shards need the tokenizer"):
        prepare(cfg)
    cfg = _config(tmp_path / "f", old_shards)
    cfg.sources[0].paths = ["x.jsonl"]
    with pytest.raises(DataPrepError, match=r"sources\[0\]: set exactly one of"):
        prepare(cfg)
