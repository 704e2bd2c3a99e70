"""Where the norms of a built LLaMA live, under the names monitoring and evaluation report them by."""

from torch import nn


def norm_sites(chunks: list[nn.Module]) -> dict[str, nn.Module]:
    """{"attention/layer_01": module, "mlp/layer_01": ..., "final": ...} over this rank's model chunks
    (global 1-based layer numbers, so pipeline stages name their layers consistently)."""
    sites: dict[str, nn.Module] = {}
    for chunk in chunks:
        decoder = getattr(chunk, "decoder", None)
        if decoder is None:
            continue
        for layer in decoder.layers:
            for site, attr in (("attention", "input_layernorm"), ("mlp", "pre_mlp_layernorm")):
                sites[f"{site}/layer_{layer.layer_number:02d}"] = getattr(layer, attr)
        if getattr(decoder, "final_layernorm", None) is not None:
            sites["final"] = decoder.final_layernorm
    return sites
