"""The whole service: concurrency, faults, hot paths, the local run, the proxy in front."""
