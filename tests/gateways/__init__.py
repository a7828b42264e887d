"""What LTIaaS and Stripe answer, as the gateways read it (paygate/gateways)."""
