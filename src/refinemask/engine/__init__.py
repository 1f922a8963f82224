"""The engine: training, evaluation and prediction around the model.

* :mod:`.train`: the training loop (``refinemask train``), :func:`~.train.train`;
* :mod:`.evaluate`: run a model over a dataset and score it (``refinemask eval CONFIG``);
* :mod:`.predict`: :class:`~.predict.Predictor`, a model ready to segment images (the loop of
  ``refinemask predict`` over files is :mod:`refinemask.predict_files`, the overlays
  :mod:`refinemask.overlay`);
* :mod:`.training_checkpoints`: what a run writes to resume exactly (with RNG states);
* :mod:`.init_weights`: starting a run from another model's weights (``train.init_weights``);
* :mod:`.data`: datasets and the deterministic training sample stream;
* :mod:`.schedule`: optimiser, learning-rate schedule and its linear scaling;
* :mod:`.distributed`: ``torchrun`` / DDP setup and gathering;
* :mod:`.logging`: progress bar, text log, TensorBoard.

Model files (weights, or a training checkpoint) and :func:`~refinemask.model_files.load_model` are
:mod:`refinemask.model_files`, beside the engine, because official-checkpoint conversion and
export write and read them too. Nothing is imported here, so ``import refinemask.engine.predict``
stays light.
"""
