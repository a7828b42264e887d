"""Settings, logs, the state machine, models and migrations (paygate/core)."""
