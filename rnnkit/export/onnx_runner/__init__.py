"""The exported model's modules, behind the entry :mod:`rnnkit.export.runner`: NumPy,
onnxruntime and the standard library only.

``rnnkit export`` copies this package into the export folder as ``onnx_runner/`` (with the
modules of :mod:`rnnkit.portable` beside them), where ``runner.py`` loads it from its own folder.
One module an idea:

* :mod:`.folder`: ``config.json``, vocabularies, one onnxruntime session per graph;
* :mod:`.vocab`, :mod:`.sampling`, :mod:`.batches`, :mod:`.search`: vocabulary JSON, the NumPy
  draw, padded batches, greedy and beam search;
* :mod:`.language`, :mod:`.labelling`, :mod:`.decoders`, :mod:`.forecast`: each task's methods;
* :mod:`.model`: :class:`~.model.Exported`, all of them and ``infer(request)``;
* :mod:`.shared`: the rnnkit code it shares (the inference contract, :mod:`rnnkit.portable`).

This file imports nothing, so that loading the package from an export folder runs no code.
"""
