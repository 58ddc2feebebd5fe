"""Image data: the loaders (:mod:`.images`), list-file partitions and checks of image files
(:mod:`.image_lists`) and the content fingerprint of a run's data (:mod:`.fingerprint`)."""

from poolwise.vision.data.images import (
    EMBEDDED,
    FASHION_MNIST_CLASSES,
    ArrayImages,
    ImageSplit,
    collate_batch,
    load_embedded,
    load_fashion_mnist,
    load_image_folder,
    load_images,
    random_crop_flip,
    read_idx,
)

__all__ = ["EMBEDDED", "FASHION_MNIST_CLASSES", "ArrayImages", "ImageSplit", "collate_batch",
           "load_embedded", "load_fashion_mnist", "load_image_folder", "load_images",
           "random_crop_flip", "read_idx"]
