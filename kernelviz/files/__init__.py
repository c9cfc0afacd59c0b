"""Files in and out: atomic writes that keep a result when a write fails (``write``), image input (``images``),
JSON records (``records``), HTML pages from templates that escape every value (``html``, with the fragments the
static site and the explorer share in ``templates/``)."""
