"""Hugging Face datasets sources: a saved dataset directory and a streaming `json` builder, both local."""

import json

from data_prep import prepare
from data_prep.config import HFSource, PrepareConfig, SourceConfig, TokenizerConfig
from tests.data_prep.helpers import check_roundtrip, make_texts, write_jsonl


def test_saved_dataset_dir_and_streaming_json(tmp_path, small_tokenizer):
    import datasets

    texts = make_texts(150)
    rows = texts[:100] + [None]  # a record without text: counted, not fatal
    datasets.Dataset.from_dict({"content": rows, "n": list(range(101))}).save_to_disk(
        str(tmp_path / "saved"), num_shards=2)
    files = [str(write_jsonl(tmp_path / f"part{i}.jsonl", texts[100 + 25 * i: 125 + 25 * i])) for i in (0, 1)]
    cfg = PrepareConfig(
        output_dir=str(tmp_path / "out"), workers=2, valid_fraction=0.1, partition_bytes=4_000,
        tokenizer=TokenizerConfig(model=str(small_tokenizer)),
        sources=[SourceConfig(name="saved", hf=HFSource(path=str(tmp_path / "saved")), text_key="content"),
                 SourceConfig(name="streamed", hf=HFSource(path="json", data_files=files, streaming=True))])
    m_path = prepare(cfg)
    m = json.loads(m_path.read_text())
    by_source = {}
    for shard in m["splits"]["train"]:
        by_source[shard["source"]] = by_source.get(shard["source"], 0) + 1
    assert by_source["saved"] > 1 and by_source["streamed"] == 2  # row ranges; one shard per streamed file
    [saved, streamed] = m["sources"]
    assert saved["errors"]["missing_key"] == 1 and saved["error_details"][0]["lines"] == [101]
    assert (saved["documents"], streamed["documents"]) == (100, 50)
    check_roundtrip(m_path, {i: ("saved" if i < 100 else "streamed", t) for i, t in enumerate(texts)})
