"""Building blocks of ``fedcare audit`` (issue 14): pure numpy/scipy, no Flower or ML framework.

``lower_bound``: the one-run audit's epsilon lower bound (Steinke, Nasr, Jagielski, NeurIPS
2023); ``canaries``: seeded canary inclusion, tabular canary records and the guessing rule;
``membership``: membership-inference metrics, the DP bound on TPR and LiRA scores (Carlini et
al., IEEE S&P 2022); ``plots``: the ROC plot with the (epsilon, delta) bound.
"""
