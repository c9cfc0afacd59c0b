"""Files in and out: atomic writes that keep a result when a write fails (``write``), image input (``images``),
JSON records (``records``), escaping for HTML (``escape``)."""
