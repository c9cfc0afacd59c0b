"""The model side: loading models and weights, naming layers, capturing activations, borrowing a model without changing
it.

``guard`` (borrow a model unchanged; check what a user hands over), ``models`` (load_model, weights, checkpoints,
``ModelMeta``), ``names`` (layer names: VGG aliases, module paths), ``layout`` (token and channels-last outputs as
maps), ``capture`` (hooks that live only inside a ``with`` block; ``activations``), ``layers`` (the layer table,
receptive fields, the depth count, default layers), ``activations`` (an activation's floor and cap: what can have
concepts, where values tie), ``distributed`` (``torch.distributed`` under ``torchrun``; ``Shard``, the one rule that
shares work out among processes), ``progress`` (the one progress protocol of every long computation), ``install``
(whether torch and torchvision go together, from their metadata).

Module order (each imports only those before it): ``progress``, ``activations`` → ``guard`` → ``models`` → ``names``
→ ``layout`` → ``capture`` → ``layers``; ``distributed`` stands alone.
"""
