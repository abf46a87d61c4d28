"""Training and fine-tuning, one idea per module:

- ``train``: a zoo model from a JSON recipe (``neurocomp train``);
- ``finetune``: the ``neurocomp finetune`` command, quantization-aware fine-tuning of a compiled
  artifact compiled back into a new one;
- ``config``: its recipe, the frozen ``FinetuneConfig`` (defaults and checks; read by the CLI
  without importing torch);
- ``rebuild``: the folded float IR rebuilt as a SpikingJelly model (``graph_to_module``);
- ``fakequant``: straight-through fake quantization through ``neurocomp.fixedpoint``'s number
  formats (``QSynapse``, ``QGain``, ``qat_model``);
- ``qat``: the training loop (``train_qat``), its validation split, teacher and augmentation.

Every model runs over time through ``neurocomp.frontends.torch.run_torch_model``."""
