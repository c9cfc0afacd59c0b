"""The model side: loading models and weights, naming layers, capturing activations, borrowing a model
without changing it.

Module order (each imports only those before it): ``guard`` → ``models`` → ``names`` → ``capture`` →
``layers``.
"""
