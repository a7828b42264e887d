"""The flow, the webhook endpoint, operator pages and API, guards, throttling, identity and languages (paygate/web)."""
