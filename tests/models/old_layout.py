"""Rewrite a saved hybrid into the checkpoint layout of hydrahead 0.1, before the projections were fused:
the FA branch's q_proj / k_proj / v_proj, the GDN branch's q_proj / k_proj / v_proj / a_proj / b_proj."""

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hydrahead.layers.hybrid_attention import HybridAttention


def write_old_layout(model, directory: Path, old: Path) -> Path:
    shutil.copytree(directory, old)
    weights = load_file(old / "model.safetensors")
    for name, module in model.named_modules():
        if not isinstance(module, HybridAttention):
            continue
        for branch, fused, parts in ((module.fa, "qkv_proj", "qkv"), (module.gdn, "qkv_proj", "qkv"),
                                     (module.gdn, "ab_proj", "ab")):
            if branch is None:
                continue
            for kind in ("weight", "bias"):
                key = f"{name}.{branch_name(module, branch)}.{fused}.{kind}"
                if key not in weights:
                    continue
                sizes = list(branch.split) if fused == "qkv_proj" else [branch.num_heads] * 2
                for part, piece in zip(parts, torch.split(weights.pop(key), sizes, dim=0)):
                    weights[key.replace(f".{fused}.", f".{part}_proj.")] = piece.contiguous()
    save_file(weights, old / "model.safetensors", metadata={"format": "pt"})
    return old


def branch_name(module: HybridAttention, branch) -> str:
    return "fa" if branch is module.fa else "gdn"
