"""Evaluation: ``waveunet evaluate`` (:mod:`.evaluate`) scores a checkpoint on a dataset split, or
stems already on disk (:mod:`.estimates`), with :mod:`waveunet.metrics`, and writes its report
through :mod:`waveunet.reporting`. It imports no training.
"""
