"""`LlamaDyTConfig`: LLaMA plus the norm this project trained it with (DyT, Derf or RMSNorm), per-head
Q/K norms and the learnable embedding scalar.

Shipped as custom code inside exported model folders, so it imports nothing but `transformers`.
"""

from transformers import LlamaConfig


class LlamaDyTConfig(LlamaConfig):
    """Extra fields (everything else is `LlamaConfig`'s):

    norm_type        "dyt" (γ·tanh(α·x)+β), "derf" (γ·erf(α·x+s)+β) or "rmsnorm" (LLaMA's), at every norm site
    norm_bias        DyT/Derf carry β
    alpha_init       {"attention", "mlp", "final"}: initial α per site (only used to initialise from scratch;
                     the Q/K norms use the attention value)
    qk_norm          a norm over each query and key head (width head_dim) before RoPE
    embedding_scale  initial value of a learnable scalar multiplying the token embeddings, or None for none
    """

    model_type = "llama_dyt"

    def __init__(self, norm_type: str = "dyt", norm_bias: bool = False, alpha_init: dict | None = None,
                 qk_norm: bool = False, embedding_scale: float | None = None, **kwargs) -> None:
        if norm_type not in ("dyt", "derf", "rmsnorm"):
            raise ValueError(f"norm_type must be dyt, derf or rmsnorm, not {norm_type!r}")
        self.norm_type = norm_type
        self.norm_bias = norm_bias
        self.alpha_init = dict(alpha_init or {"attention": 0.5, "mlp": 0.5, "final": 0.5})
        self.qk_norm = qk_norm
        self.embedding_scale = embedding_scale
        super().__init__(**kwargs)


__all__ = ["LlamaDyTConfig"]
