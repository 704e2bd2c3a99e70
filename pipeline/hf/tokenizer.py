"""The run's SentencePiece model as a Hugging Face tokenizer that encodes every text to the same ids.

data_prep trains BPE with identity normalisation, kept whitespace, a dummy-prefix space and
whitespace-only pieces, and SentencePiece's encoder splits the text into words that start at a space
following a non-space (a run of spaces stays at the front of the next word). `tokenizer.json` replays
exactly that: normaliser (prefix "▁", spaces → "▁"), a word split with the same rule, then BPE with
the model's own merge order and byte fallback. Stock `LlamaTokenizer` would instead rebuild its own
pipeline (a Metaspace split), which differs on leading runs of spaces, so the folder names the generic
`PreTrainedTokenizerFast` class; `tokenizer.model` is included for SentencePiece users.
Strings equal to a special token ("<s>", "</s>", ...) are read as that token, as in every HF tokenizer.
"""

import json
import shutil
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

SPACE = "▁"
WORD = Regex(f"{SPACE}*[^{SPACE}]+|{SPACE}+")


def _sentencepiece(path: Path):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return spm.SentencePieceProcessor(model_file=str(path)), proto


def _check_supported(path: Path, proto) -> None:
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    problems = [msg for bad, msg in (
        (spec.model_type != spec.BPE, "model_type is not BPE"),
        (norm.name not in ("identity", ""), f"normalization {norm.name!r} (only identity replays exactly)"),
        (norm.remove_extra_whitespaces, "remove_extra_whitespaces is on"),
        (spec.treat_whitespace_as_suffix, "treat_whitespace_as_suffix is on"),
        (not spec.allow_whitespace_only_pieces, "allow_whitespace_only_pieces is off"),
    ) if bad]
    if problems:
        raise ValueError(f"{path}: cannot export this SentencePiece model exactly: {'; '.join(problems)}")


def build_tokenizer(path: Path, add_bos: bool) -> Tokenizer:
    from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

    sp, proto = _sentencepiece(path)
    _check_supported(path, proto)
    vocab, _, merges = SentencePieceExtractor(str(path)).extract()
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=sp.id_to_piece(sp.unk_id()), fuse_unk=True,
                        byte_fallback=proto.trainer_spec.byte_fallback))
    prefix = [normalizers.Prepend(SPACE)] if proto.normalizer_spec.add_dummy_prefix else []
    tok.normalizer = normalizers.Sequence([*prefix, normalizers.Replace(" ", SPACE)])
    tok.pre_tokenizer = pre_tokenizers.Split(WORD, "isolated")
    strip = [decoders.Strip(" ", 1, 0)] if prefix else []
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), *strip])
    if add_bos:
        bos = sp.id_to_piece(sp.bos_id())
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, sp.bos_id())])
    return tok


def export_tokenizer(path: Path, out: Path, ids: dict, add_bos: bool, max_length: int) -> None:
    """Write tokenizer.model, tokenizer.json and tokenizer_config.json into `out`. `ids`: the data
    manifest's tokenizer entry (bos_id, eod_id, pad_id), which the special tokens follow."""
    from transformers import PreTrainedTokenizerFast

    sp, _ = _sentencepiece(path)
    if add_bos and ids["bos_id"] < 0:
        raise ValueError(f"{path}: the data was prepared with a BOS token but the model has no bos piece")
    specials = {"bos_token": ids["bos_id"], "eos_token": ids["eod_id"], "unk_token": sp.unk_id(),
                "pad_token": ids["pad_id"]}
    hf = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(path, add_bos), model_max_length=max_length,
                                 clean_up_tokenization_spaces=False, add_bos_token=add_bos, add_eos_token=False,
                                 **{k: sp.id_to_piece(i) for k, i in specials.items() if i >= 0})
    hf.save_pretrained(str(out))
    # The class name older transformers know too (5.x maps it to the same tokenizers backend).
    config = out / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"},
                                 indent=2) + "\n")
    shutil.copyfile(path, out / "tokenizer.model")
