"""The fixed Fashion-MNIST benchmark recipe, shared by every benchmark script.

Plain constants and arithmetic only: this module imports neither Keras nor
TensorFlow, so the tfmot baseline (run under ``TF_USE_LEGACY_KERAS=1`` in its
own virtual environment) and our own ``accuracy.py`` read the same numbers.
"""

from __future__ import annotations

TRAIN_SIZE = 20_000  # the first 20,000 training images
BATCH_SIZE = 128
EPOCHS = 8
LEARNING_RATE = 0.05  # SGD, momentum 0.9, Nesterov, cosine decay to 0 over the run
MOMENTUM = 0.9
NESTEROV = True
PRUNE_BEGIN_EPOCH = 1  # pruning ramps from the start of epoch 1 ...
PRUNE_END_EPOCH = 5  # ... to the start of epoch 5, then the masks are fixed
UPDATES_PER_RAMP = 12  # mask updates during the ramp (frequency divides the ramp)
DENSE_LAYERS = ("stem", "classifier")  # the stem conv and the classifier stay dense
SEED = 0
BN_MOMENTUM = 0.9  # tf_sparse_prune.models.BN_MOMENTUM; the tf_keras twin must match


def steps_per_epoch(train_size: int = TRAIN_SIZE, batch_size: int = BATCH_SIZE) -> int:
    """Steps per epoch; the last partial batch is dropped so every epoch is equal."""
    return train_size // batch_size


def prune_steps(
    train_size: int = TRAIN_SIZE,
    batch_size: int = BATCH_SIZE,
    epochs: int = EPOCHS,
    updates: int = UPDATES_PER_RAMP,
) -> tuple[int, int, int]:
    """(begin_step, end_step, frequency) of the polynomial schedule.

    The ramp runs from epoch ``PRUNE_BEGIN_EPOCH`` to ``PRUNE_END_EPOCH`` of an
    ``EPOCHS``-epoch run, scaled proportionally for shorter or longer runs. The end
    step is moved down to the nearest multiple of the frequency after the begin
    step, so that tfmot (which prunes only when ``(step - begin) % frequency == 0``)
    and our schedule both reach the final sparsity exactly.
    """
    spe = steps_per_epoch(train_size, batch_size)
    scale = epochs / EPOCHS
    begin = round(PRUNE_BEGIN_EPOCH * scale * spe)
    ramp = round((PRUNE_END_EPOCH - PRUNE_BEGIN_EPOCH) * scale * spe)
    frequency = max(1, ramp // updates)
    end = begin + frequency * max(1, ramp // frequency)
    return begin, end, frequency


def regrow_epochs(epochs: int = EPOCHS) -> tuple[int, int]:
    """(regrow_start_epoch, regrow_end_epoch) of SUBP matching the magnitude ramp.

    SUBP rebuilds its masks at the start of epochs ``t_s < t <= t_e`` (Keras's 0-based
    epochs), so ``t_s = PRUNE_BEGIN_EPOCH - 1`` and ``t_e = PRUNE_END_EPOCH`` put its
    first mask at the start of epoch 1 and its final hard mask at the start of epoch 5,
    where the magnitude ramp begins and ends; scaled like ``prune_steps`` for other
    run lengths (``t_e > t_s`` always).
    """
    scale = epochs / EPOCHS
    start = max(0, round(PRUNE_BEGIN_EPOCH * scale) - 1)
    end = max(start + 1, round(PRUNE_END_EPOCH * scale))
    return start, end
