"""Training and fine-tuning: ``train`` (a zoo model from a JSON recipe, ``neurocomp train``) and
``finetune`` (quantization-aware fine-tuning of a compiled artifact, ``neurocomp finetune``; its
defaults in ``_finetune_defaults``, read by the CLI without importing torch)."""
