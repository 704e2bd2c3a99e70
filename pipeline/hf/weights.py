"""HF weight files: `model.safetensors`, or shards plus `model.safetensors.index.json` above a size."""

import json
import os
import re
from pathlib import Path

import torch

SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30}


def parse_size(text: str) -> int:
    """'5GB' → 5·10⁹ bytes (HF's convention; KiB/MiB/GiB are powers of two)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m[2].upper() not in _UNITS:
        raise ValueError(f"size {text!r}: expected a number with an optional unit (e.g. 5GB, 500MB)")
    return int(float(m[1]) * _UNITS[m[2].upper()])


def save(tensors: dict[str, torch.Tensor], out: Path, max_shard_bytes: int) -> list[str]:
    """Write the tensors (in the given order) into `out`; returns the file names written."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    names = [SINGLE] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    umask = os.umask(0)
    os.umask(umask)
    for name, shard in zip(names, shards, strict=True):
        save_file(shard, str(out / name), metadata={"format": "pt"})
        os.chmod(out / name, 0o666 & ~umask)  # safetensors creates files 0600; a model folder is for sharing
    if len(shards) == 1:
        return names
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
             "weight_map": {k: name for name, shard in zip(names, shards, strict=True) for k in shard}}
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return [*names, INDEX]


class Reader:
    """Tensors of an HF folder by name, read one at a time (a rank only reads what it holds)."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        self.folder = folder
        if (folder / INDEX).is_file():
            weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
        elif (folder / SINGLE).is_file():
            with safe_open(str(folder / SINGLE), framework="pt") as f:
                weight_map = dict.fromkeys(f.keys(), SINGLE)
        else:
            raise FileNotFoundError(f"{folder}: no {SINGLE} or {INDEX} (only safetensors weights are read; "
                                    "re-save a .bin checkpoint with save_pretrained(safe_serialization=True))")
        self.weight_map: dict[str, str] = weight_map
        self._files: dict[str, object] = {}
        self._open = safe_open

    def keys(self) -> set[str]:
        return set(self.weight_map)

    def get(self, name: str) -> torch.Tensor:
        if name not in self.weight_map:
            raise KeyError(f"{self.folder}: no tensor {name!r} in the weights")
        file = self.weight_map[name]
        if file not in self._files:
            self._files[file] = self._open(str(self.folder / file), framework="pt")
        return self._files[file].get_tensor(name)
