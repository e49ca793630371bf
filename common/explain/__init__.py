"""Explanations of fedcare's models: per-patient attributions and the consortium's DP release.

``attribution``: exact attributions of a linear (logistic) model and integrated gradients of
the MLPs and the CNN, on the Keras model with TensorFlow's gradients, checked by completeness.
``consortium``: each hospital's clipped sum of absolute attributions, its Gaussian release and
the consortium's ratio of sums with the noise's intervals.
"""
