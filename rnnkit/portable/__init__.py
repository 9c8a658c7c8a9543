"""Torch-free pieces that rnnkit and its exported runner share.

Each module here imports only the standard library (NumPy at most) and nothing of rnnkit, so
that ``rnnkit export`` can copy it into every export folder, where the runner
(:mod:`rnnkit.export.runner`) uses the same code as rnnkit's own models:

* :mod:`~rnnkit.portable.words`: the word tokenizer of parallel text and its inverse;
* :mod:`~rnnkit.portable.bio`: BIO tag sequences and their entity spans (conlleval's rule);
* :mod:`~rnnkit.portable.text_sampling`: the sampling loop behind a language model's
  ``generate`` / ``sample_text`` and the record ``score`` returns.
"""
