"""The model: the Wave-U-Net and its exact shape arithmetic (:mod:`.network`), the bounded
output heads (:mod:`.heads`), the losses (:mod:`.losses`), self-describing checkpoints
(:mod:`.checkpoint`) and ``waveunet info`` (:mod:`.info`).

It imports no data, training or separation: they are built on it.
"""
