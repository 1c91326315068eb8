"""Separation: exact chunked inference and the :class:`~.inference.Separator` (:mod:`.inference`),
file-to-file streaming through the same loop (:mod:`.streaming`), many songs with decoding,
separating and writing overlapped (:mod:`.pipeline`), where stems go and which files are songs
(:mod:`.layout`), and ``waveunet separate`` (:mod:`.separate`).

It imports no training: a checkpoint is all it needs.
"""
