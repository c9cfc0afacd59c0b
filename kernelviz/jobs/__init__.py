"""What a front-end asks for, done in one call: parse the user's strings (``specs``), check and name the
outputs (``outputs``), compute and write files with their records (``optimize``, ``inspect``).

The CLI, notebooks and the explorer call these; none of them repeats their logic.
"""
