"""``forestnet area``: area by class and accuracy, with confidence intervals, from a labelled
reference sample."""
