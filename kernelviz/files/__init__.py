"""Files in and out: atomic writes (``write``), image input (``images``), JSON records (``records``)."""
