"""The core: database, models, the registration state machine, money, settings, logs, languages, telemetry."""
