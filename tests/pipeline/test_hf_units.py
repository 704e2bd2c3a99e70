"""HF interop pieces that need no training: the state-dict adapter's layouts, the tokenizer export on
the whole bundled corpus, the LlamaDyT architecture, and the checks that refuse a mismatching import."""

import gzip
import json
from types import SimpleNamespace

import pytest
import torch

from pipeline.config import load_config
from pipeline.model.hf_adapter import AdapterError, Geometry, from_hf, hf_config, hf_names, to_hf
from tests.helpers import REPO

G = Geometry(num_heads=8, num_groups=2, head_dim=4, vocab_size=100, tied=False)


def test_qkv_is_split_per_query_group():
    # Row r of megatron's fused QKV tagged with r: group g holds [4 q heads, k, v] × head_dim rows.
    h, rows_per_group = 16, (8 // 2 + 2) * 4
    qkv = torch.arange(2 * rows_per_group, dtype=torch.float32)[:, None].expand(-1, h).contiguous()
    out = to_hf({"decoder.layers.0.self_attention.linear_qkv.weight": qkv}, G)
    q, k, v = (out[f"model.layers.0.self_attn.{n}_proj.weight"][:, 0] for n in "qkv")
    for head in range(8):  # HF q head i belongs to KV group i // 4
        g, slot = divmod(head, 4)
        assert q[head * 4:(head + 1) * 4].tolist() == list(range(g * 24 + slot * 4, g * 24 + slot * 4 + 4))
    assert k.tolist() == [16, 17, 18, 19, 40, 41, 42, 43]
    assert v.tolist() == [20, 21, 22, 23, 44, 45, 46, 47]


def test_round_trip_covers_every_tensor_kind():
    torch.manual_seed(0)
    h, f = 16, 24
    state = {
        "embedding.word_embeddings.weight": torch.randn(128, h),  # 28 padding rows
        "embedding.scale": torch.randn(1),
        "decoder.layers.0.input_layernorm.alpha": torch.randn(1),
        "decoder.layers.0.input_layernorm.weight": torch.randn(h),
        "decoder.layers.0.self_attention.linear_qkv.weight": torch.randn(48, h),
        "decoder.layers.0.self_attention.q_layernorm.weight": torch.randn(4),
        "decoder.layers.0.self_attention.linear_proj.weight": torch.randn(h, 32),
        "decoder.layers.0.pre_mlp_layernorm.shift": torch.randn(1),
        "decoder.layers.0.mlp.linear_fc1.weight": torch.randn(2 * f, h),
        "decoder.layers.0.mlp.linear_fc2.weight": torch.randn(h, f),
        "decoder.layers.0.mlp.linear_fc1._extra_state": None,
        "decoder.final_layernorm.bias": torch.randn(h),
        "output_layer.weight": torch.randn(128, h),
    }
    hf = to_hf(state, G)
    assert hf["model.embed_tokens.weight"].shape == (100, h)
    assert hf["model.layers.0.mlp.gate_proj.weight"].equal(state["decoder.layers.0.mlp.linear_fc1.weight"][:f])
    for name, t in state.items():
        if t is None:
            continue
        vocab = name in ("embedding.word_embeddings.weight", "output_layer.weight")
        back = from_hf(name, hf.__getitem__, G, rows=128 if vocab else None)
        if vocab:  # real rows back, padding zero
            assert back[:100].equal(t[:100]) and not back[100:].any()
        else:
            assert back.equal(t), name


def test_te_fused_norm_keys_map_like_separate_norms():
    assert hf_names("decoder.layers.3.self_attention.linear_qkv.layer_norm_weight") == \
        hf_names("decoder.layers.3.input_layernorm.weight") == ["model.layers.3.input_layernorm.weight"]
    assert hf_names("decoder.layers.3.mlp.linear_fc1.layer_norm_weight") == \
        ["model.layers.3.post_attention_layernorm.weight"]


def test_tied_head_is_the_embedding():
    g = Geometry(8, 2, 4, 100, tied=True)
    emb = torch.randn(128, 16)
    hf = to_hf({"embedding.word_embeddings.weight": emb, "output_layer.weight": emb}, g)
    assert list(hf) == ["model.embed_tokens.weight"]
    assert from_hf("output_layer.weight", hf.__getitem__, g, rows=128)[:100].equal(emb[:100])


def test_foreign_tensors_and_norms_are_refused():
    with pytest.raises(AdapterError, match="decoder.layers.0.mlp.router.weight"):
        to_hf({"decoder.layers.0.mlp.router.weight": torch.zeros(2, 2)}, G)
    cfg = load_config("tiny_rmsnorm", ["model.norm.type=layernorm"])
    with pytest.raises(AdapterError, match="'layernorm' has no Hugging Face architecture"):
        hf_config(cfg, 4096, 1, 2, 0)


def test_architecture_follows_the_norm():
    stock = hf_config(load_config("tiny_rmsnorm"), 4096, 1, 2, 0)
    assert stock["architectures"] == ["LlamaForCausalLM"] and "norm_type" not in stock
    qk = hf_config(load_config("tiny_rmsnorm", ["model.norm.qk_norm=true"]), 4096, 1, 2, 0)
    assert qk["architectures"] == ["LlamaDyTForCausalLM"] and qk["norm_type"] == "rmsnorm"
    dyt = hf_config(load_config("tiny_dyt"), 4096, 1, 2, 0)
    assert dyt["norm_type"] == "dyt" and dyt["embedding_scale"] == pytest.approx(128 ** 0.5)
    assert dyt["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}


@pytest.mark.parametrize("norm", ["dyt", "derf"])
def test_llama_dyt_saves_and_loads_through_auto_classes(norm, tmp_path):
    from transformers import AutoModelForCausalLM

    from pipeline.hf import LlamaDyTConfig, LlamaDyTForCausalLM

    config = LlamaDyTConfig(norm_type=norm, qk_norm=True, embedding_scale=4.0, norm_bias=True, vocab_size=50,
                            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, alpha_init={"attention": 0.8, "mlp": 0.2, "final": 0.3})
    model = LlamaDyTForCausalLM(config).eval()
    assert model.model.layers[0].input_layernorm.alpha.item() == pytest.approx(0.8)
    assert model.model.norm.alpha.item() == pytest.approx(0.3)
    assert model.model.embed_tokens.scale.item() == 4.0
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_exported_tokenizer_encodes_the_corpus_like_sentencepiece(pydocs_manifest, tmp_path):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    from pipeline.hf.tokenizer import export_tokenizer

    tok = json.loads(pydocs_manifest.read_text())["tokenizer"]
    model = pydocs_manifest.parent / tok["path"]
    export_tokenizer(model, tmp_path, tok, add_bos=False, max_length=128)
    hf, sp = AutoTokenizer.from_pretrained(tmp_path), spm.SentencePieceProcessor(model_file=str(model))
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (tok["bos_id"], tok["eod_id"], tok["pad_id"])
    texts = [json.loads(line)["text"] for line in gzip.open(REPO / "data/corpus/pydocs.jsonl.gz", "rt")]
    texts += ["", " ", "   x", "y   ", "a\n\n\tb", "ünïcödé 日本語 🙂", "3.14159"]
    wrong = [t[:40] for t in texts if hf(t, add_special_tokens=False)["input_ids"] != sp.encode(t)]
    assert wrong == []
    assert all(hf.decode(sp.encode(t)) == sp.decode(sp.encode(t)) for t in texts)


def _hf_folder(path, manifest, **config):
    from transformers import LlamaConfig

    from pipeline.hf.tokenizer import export_tokenizer

    tok = json.loads(manifest.read_text())["tokenizer"]
    fields = dict(vocab_size=4096, hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 1e4})
    LlamaConfig(**{**fields, **config}).save_pretrained(path)
    export_tokenizer(manifest.parent / tok["path"], path, tok, add_bos=False, max_length=128)


def _session(manifest, config="tiny_rmsnorm"):
    """What import_weights reads before it touches the engine."""
    from pipeline.data import load_manifest

    return SimpleNamespace(cfg=load_config(config), vocab_size=4096, manifest=load_manifest(manifest), engine=None)


def test_import_refuses_a_mismatching_config_naming_each_key(pydocs_manifest, tmp_path):
    from pipeline.hf.load import HFImportError, import_weights

    _hf_folder(tmp_path, pydocs_manifest, hidden_size=64, num_hidden_layers=2, tie_word_embeddings=True)
    with pytest.raises(HFImportError) as e:
        import_weights(f"hf:{tmp_path}", _session(pydocs_manifest))
    msg = str(e.value)
    for key in ("hidden_size: HF has 64", "num_hidden_layers: HF has 2", "model.num_layers", "tie_word_embeddings"):
        assert key in msg
    assert "intermediate_size" not in msg


def test_import_refuses_another_vocabulary(pydocs_manifest, tmp_path):
    from pipeline.hf.load import HFImportError, import_weights

    _hf_folder(tmp_path, pydocs_manifest)
    tj = json.loads((tmp_path / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = "▁the", "▁a"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(HFImportError, match="2 pieces differ"):
        import_weights(f"hf:{tmp_path}", _session(pydocs_manifest))


def test_import_refuses_a_folder_without_weights(pydocs_manifest, tmp_path):
    from pipeline.hf.load import HFImportError, import_weights

    _hf_folder(tmp_path, pydocs_manifest)
    with pytest.raises(HFImportError, match="no model.safetensors"):
        import_weights(f"hf:{tmp_path}", _session(pydocs_manifest))
