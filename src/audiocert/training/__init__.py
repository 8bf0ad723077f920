"""Training a base classifier: Adam, LR reduction on plateau, early stopping, optional Gaussian augmentation.

Augmentation adds N(0, sigma^2) noise at a frontend stage (waveform, magspec or mfbe), as the seed's
"augmented" models did: x_stage + sigma * eps -> rest of the frontend -> model.

Checkpoints hold tensors and plain metadata only and load with ``torch.load(weights_only=True)``:
- ``last.pt`` (every epoch, and where a time budget stops training): everything a rerun needs to continue exactly
  where this one stopped: weights, optimizer, LR scheduler, the RNG states, and the position (epoch, and batches of
  it done). The batches of epoch e come in a fixed order (a permutation seeded by seed * 1000 + e), so resuming at
  batch k of epoch e trains the same model as a run that was never interrupted.
- ``best.pt`` (the best validated model): the weights and what certification needs (architecture, config,
  metrics, classes, speakers, epoch, code version); no optimizer state, so it is about a third of last.pt's size.

``train.max_minutes`` is a budget for the training wall time of the model, counted over every command that trained
it (a resumed run gets what the earlier ones left), and including validation and the final test evaluation: training
stops before the batch that would leave too little time for them, saves a resumable last.pt, validates the partial
model and says so. A rerun with a larger budget continues at that batch. A corrupt checkpoint (a write cut short, a
damaged disk) is renamed to ``<name>.corrupt-<timestamp>`` with a warning, and training starts afresh.

:func:`run_training` composes the modules, each one job; a module imports only those above it::

    budget      the time budget's clock and BudgetTimer (does the next batch still fit?)
    augment     the model's inputs: the frontend with Gaussian noise at a stage
    config      the checks of the train config's values
    finished    whether an earlier command already trained this config's model
    trainer     Trainer (data, frontend, model, optimizer, LR scheduler) and TrainingState (position, counters)
    resume      an earlier command's output: finished model, last.pt to continue from, corrupt checkpoints set aside
    evaluation  validation accuracy (timed for the budget) and the test accuracy of best.pt
    saving      best.pt, last.pt and metrics.json
    epoch       one epoch of batches under the time budget
    loop        the epochs in turn: stop rules, validation and checkpoints after each, the stop on the budget
    run         run_training
"""

from audiocert.training.run import run_training

__all__ = ["run_training"]
