"""The original Wave-U-Net's TensorFlow checkpoints: a reader that needs no TensorFlow
(:mod:`.reader`) and ``waveunet import-tf`` (:mod:`.import_tf`), which converts them into
waveunet checkpoints.
"""
