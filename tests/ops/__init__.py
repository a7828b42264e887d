"""The worker, retention, metrics, and real server processes (paygate/ops)."""
