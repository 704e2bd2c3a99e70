"""SDPA core attention (pipeline/model/sdpa.py): the same numbers as megatron's local DotProductAttention,
and a clear refusal of what it does not implement."""

import pytest
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.transformer_config import TransformerConfig

from pipeline.model.sdpa import SDPAttention
from tests.helpers import run_python


def test_sdpa_model_matches_megatron_local_attention_in_loss_and_gradients():
    out = run_python("""
import torch
from megatron.core.models.backends import LocalSpecProvider
from pipeline import runtime
from pipeline.config import load_config
from pipeline.engine.megatron import causal_mask
from pipeline.model import build_model
from pipeline.model.sdpa import SDPASpecProvider

cfg = load_config("tiny_dyt", ["model.num_query_groups=2"])  # GQA: 4 heads, 2 KV groups
runtime.init(cfg)
(local,) = build_model(cfg, 256, on_gpu=False, backend=LocalSpecProvider())
(sdpa,) = build_model(cfg, 256, on_gpu=False, backend=SDPASpecProvider())
sdpa.load_state_dict(local.state_dict())
s = cfg.model.seq_length
tokens = torch.randint(0, 256, (2, s + 1), generator=torch.Generator().manual_seed(0))
pos = torch.arange(s).expand(2, s)
a = local(tokens[:, :-1], pos, causal_mask(s, torch.device("cpu")), labels=tokens[:, 1:])
b = sdpa(tokens[:, :-1], pos, None, labels=tokens[:, 1:])
torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
a.mean().backward()
b.mean().backward()
grads = dict(local.named_parameters())
for name, p in sdpa.named_parameters():
    torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)
print("MATCH", a.mean().item())
runtime.shutdown()
""")
    assert "MATCH" in out


def _config(**kw) -> TransformerConfig:
    return TransformerConfig(num_layers=1, hidden_size=64, num_attention_heads=4, **kw)


@pytest.mark.parametrize("kwargs, mask, named", [
    ({"attention_dropout": 0.1}, AttnMaskType.causal, "attention dropout 0.1"),
    ({"attention_dropout": 0.0}, AttnMaskType.padding, "attn_mask_type padding"),
])
def test_sdpa_attention_refuses_what_it_does_not_implement(kwargs, mask, named):
    with pytest.raises(ValueError, match=named):
        SDPAttention(config=_config(**kwargs), layer_number=1, attn_mask_type=mask, attention_type="self")
