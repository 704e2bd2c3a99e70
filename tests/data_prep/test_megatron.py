"""The manifest's shards feed megatron-core's GPTDataset through BlendedMegatronDatasetBuilder."""

import json

import numpy as np
import pytest

from data_prep import prepare
from data_prep.config import SourceConfig, TokenizerConfig
from tests.data_prep.helpers import make_texts, prep_config, write_jsonl


@pytest.mark.filterwarnings("ignore:Could not determine rank")  # no torch.distributed here
def test_blended_gpt_datasets_from_manifest(tmp_path, small_tokenizer):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.tokenizers import MegatronTokenizerBase

    a = write_jsonl(tmp_path / "a.jsonl", make_texts(120))
    b = write_jsonl(tmp_path / "b.jsonl", make_texts(80, start=500, seed=3))
    cfg = prep_config(tmp_path / "out", [a], workers=2, valid_fraction=0.1, partition_bytes=20_000,
                      tokenizer=TokenizerConfig(model=str(small_tokenizer)))
    cfg.sources.append(SourceConfig(name="b", paths=[str(b)], weight=3.0))
    m_path = prepare(cfg)
    m = json.loads(m_path.read_text())
    tok = m["tokenizer"]

    class Tok(MegatronTokenizerBase):
        def __init__(self):
            super().__init__(str(m_path.parent / tok["path"]), {})
            self.unique_identifiers = {"sha256": tok["sha256"]}

        vocab_size = tok["vocab_size"]
        eod = tok["eod_id"]
        pad = tok["pad_id"]
        tokenize = detokenize = vocab = apply_chat_template = None

    def blend(split):  # a source's weight shared by its shards in proportion to their tokens
        shards, weight = m["splits"][split], {s["name"]: s["weight"] for s in m["sources"]}
        total = {name: sum(x["tokens"] for x in shards if x["source"] == name) for name in weight}
        return ([str(m_path.parent / s["prefix"]) for s in shards],
                [weight[s["source"]] * s["tokens"] / total[s["source"]] for s in shards])

    assert len(m["splits"]["train"]) > 2
    gcfg = GPTDatasetConfig(random_seed=1, sequence_length=32, tokenizer=Tok(),
                            blend_per_split=[blend("train"), blend("valid"), None], reset_position_ids=False,
                            reset_attention_mask=False, eod_mask_loss=False, mid_level_dataset_surplus=0.05,
                            path_to_cache=str(tmp_path / "cache"))
    train, valid, _ = BlendedMegatronDatasetBuilder(GPTDataset, [400, 40, 0], lambda: True, gcfg).build()
    assert len(train) >= 400 and len(valid) >= 40  # the blend rounds per-dataset sizes up
    samples = [train[i] for i in range(400)]
    tokens = np.stack([s["tokens"].numpy() for s in samples])
    assert tokens.shape == (400, 32) and tokens.min() >= 0 and tokens.max() < tok["vocab_size"]
    assert (tokens == tok["eod_id"]).any()
    # Source b carries weight 3 against 1: about three quarters of the samples come from it.
    from_b = np.mean([s["dataset_id"] >= len([x for x in m["splits"]["train"] if x["source"] == "src"])
                      for s in samples])
    assert 0.65 < from_b < 0.85
    assert valid[0]["tokens"].shape == (32,)
