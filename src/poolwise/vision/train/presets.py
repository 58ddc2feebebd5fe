"""Named architecture changes for timm ViT names, applied only when asked for.

``tiny28`` is a ViT sized for 28x28 images (Fashion-MNIST): 16 patches of 7x7, width 96, 4 blocks
of 6 heads (16 channels per head), MLP ratio 2. It is what ``poolwise vision`` trains when no
``--model`` is named, and what the demo uses. A preset changes the architecture, so it cannot be
combined with pretrained weights or a checkpoint made for the named one.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    "tiny28": {"patch_size": 7, "embed_dim": 96, "depth": 4, "num_heads": 6, "mlp_ratio": 2.0},
}
DEFAULT_MODEL = "vit_tiny_patch16_224"
DEFAULT_PRESET = "tiny28"
VIT_PREFIXES = ("vit_", "deit", "eva", "beit")


def apply_preset(preset: str | None, model: str, kwargs: dict, *, pretrained: bool = False,
                 checkpoint: str | None = None) -> dict:
    """``kwargs`` with the preset's values filled in (values already set win).

    Raises:
        ValueError: for an unknown preset, a preset on a model that is not a ViT, or a preset
            together with pretrained weights or a checkpoint (naming both).
    """
    if preset is None:
        return dict(kwargs)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    if not model.startswith(VIT_PREFIXES):
        raise ValueError(f"preset {preset!r} sizes a ViT; {model} is not one")
    for flag, given in (("--pretrained", pretrained), ("--checkpoint", checkpoint)):
        if given:
            raise ValueError(
                f"--preset {preset} changes the architecture of {model}, and {flag} weights "
                f"are for the architecture itself: drop --preset (or {flag})")
    return {**PRESETS[preset], **kwargs}
