"""A ViT small enough to train in seconds on the embedded 28x28 images, as a RunSpec."""

from poolwise.vision.train.spec import RunSpec

TINY = {"img_size": 28, "patch_size": 7, "embed_dim": 24, "depth": 1, "num_heads": 2,
        "mlp_ratio": 2.0}


def tiny_spec(**changes) -> RunSpec:
    spec = RunSpec(model="vit_tiny_patch16_224", pool="ggem", model_kwargs=TINY,
                   data="embedded", classes=[0, 1, 7], epochs=2, batch_size=64, lr=3e-3,
                   p_lr_mult=10.0)
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec
