"""Training of the mini-profile models on the mini world (``python -m ovseg.train.<model>``).

Nothing here is imported by ``import ovseg``; each trainer imports torch lazily.
"""
