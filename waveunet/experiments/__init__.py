"""Experiments: the shared base (:mod:`.base`: settings -> cached runs -> results JSON ->
renderers), the output-mode comparison (:mod:`.compare`) and the saturation experiment
(:mod:`.saturation`). The top of the house: they train and evaluate through the layers below.
"""
