"""Why an operator must look at a registration: each attention reason and what to do about it, in words."""

ATTENTION_REASONS = {
    "completion_refused": "LTIaaS refused the completion. The LMS admin may need to register again; "
    "retry only if the LMS side was fixed, otherwise refund.",
    "completion_uncertain": "A completion attempt may have registered the platform at LTIaaS. Check LTIaaS "
    "before retrying or refunding.",
    "completion_expired": "The LMS registration token ran out before the completion succeeded. Refund, or "
    "ask the LMS admin to register again.",
    "payment_mismatch": "The payment does not match what was sold (amount, currency, price or reference). "
    "It was not fulfilled: refund it.",
    "duplicate_payment": "A second payment arrived for an already paid registration. Refund the extra "
    "payment in the Stripe dashboard (see Checkout sessions), then mark this resolved.",
    "no_payment": "Checkout completed without a payment (for example a 100 % discount). Not fulfilled.",
    "completion_late": "LTIaaS registered a platform after the attempt had been given up (see the timeline "
    "for its id). Check it at LTIaaS, then refund or mark resolved.",
    "refunding": "A refund was started and the completion is held. If the refund failed, refund again or "
    "retry the completion.",
    "refund_unrecorded": "Stripe refunded the payment while the registration changed state. Refund again to "
    "record it (Stripe will not refund twice).",
    "refund_failed": "A refund failed after it was recorded: the money stayed with you and the access was "
    "restored. Tell the school, refund again, or mark resolved.",
    "disputed": "The payer's bank opened a dispute: answer it in the Stripe dashboard before the evidence "
    "deadline (see the licence). Lost: the access ends; won: this clears.",
    "access_unsynced": "LTIaaS has not taken the platform's new access yet; it is retried automatically. "
    "Check LTIaaS if this lasts.",
    "access_refused": "LTIaaS refused to change the platform's access (the platform may be gone there). "
    "Check it at LTIaaS.",
    "vendor_webhook_failed": "A message to the vendor's systems was not taken after 12 tries over 3 days (see "
    "Deliveries to the vendor). Fix their endpoint, then Send again, and mark this resolved.",
}
