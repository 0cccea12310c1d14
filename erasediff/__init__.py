"""The ``python -m erasediff`` entry: the same command line as the ``erasediff`` script (erasediff/cli/).

It exists so that launchers that run modules work, e.g. ``accelerate launch -m erasediff unlearn ...``.
"""
