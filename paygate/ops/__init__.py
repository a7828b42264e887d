"""Operations: the worker, data retention, the metrics page."""
