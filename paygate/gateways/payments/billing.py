"""Billing at Stripe for invoiced registrations: customers, invoices, invoice items and subscriptions, a
subscription's seats and the customer portal (mixed into
`Payments`, paygate/gateways/payments/client.py, which provides `_client`, `_call` and `_offers`). Each call has
its caller's idempotency key, so a retry never makes a second object; after a failure Stripe keeps (a 5xx), the
`find_*` calls look for what the failed call may have made, by our reference."""

from paygate.gateways.payments.objects import (
    PO_FIELD,
    InvoiceView,
    SubscriptionView,
    check_id,
    invoice_view,
    ours,
    subscription_view,
)


class Billing:
    def create_customer(
        self,
        *,
        email: str,
        name: str,
        po_number: str | None,
        metadata: dict,
        idempotency_key: str,
        address: dict | None = None,
    ) -> str:
        params = {"email": email, "name": name, "metadata": metadata}
        if address:  # where Stripe Tax places the school (country, postal code)
            params["address"] = address
        if po_number:  # copied onto every invoice of the customer, renewals included
            params["invoice_settings"] = {"custom_fields": [{"name": PO_FIELD, "value": po_number}]}
        customer = self._call(
            "create the customer",
            self._client.v1.customers.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return customer.id

    def create_invoice(
        self,
        *,
        customer: str,
        days_until_due: int,
        po_number: str | None,
        metadata: dict,
        idempotency_key: str,
        promotion_code: str | None = None,
    ) -> InvoiceView:
        params = {
            "customer": customer,
            "collection_method": "send_invoice",
            "days_until_due": days_until_due,
            "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
            "metadata": metadata,
        }
        if po_number:
            params["custom_fields"] = [{"name": PO_FIELD, "value": po_number}]
        params.update(self._billing_extras(promotion_code))
        invoice = self._call(
            "create the invoice",
            self._client.v1.invoices.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return invoice_view(invoice.to_dict())

    def add_invoice_item(
        self, *, customer: str, invoice: str, price_id: str, metadata: dict, idempotency_key: str, quantity: int = 1
    ) -> None:
        self._call(
            "add the price to the invoice",
            self._client.v1.invoice_items.create,
            params={
                "customer": customer,
                "invoice": invoice,
                "pricing": {"price": price_id},
                "quantity": quantity,
                "metadata": metadata,
            },
            options={"idempotency_key": idempotency_key},
        )

    def create_invoiced_subscription(
        self,
        *,
        customer: str,
        price_id: str,
        days_until_due: int,
        metadata: dict,
        idempotency_key: str,
        quantity: int = 1,
        promotion_code: str | None = None,
    ) -> SubscriptionView:
        sub = self._call(
            "create the subscription",
            self._client.v1.subscriptions.create,
            params={
                "customer": customer,
                "items": [{"price": price_id, "quantity": quantity}],
                "collection_method": "send_invoice",
                "days_until_due": days_until_due,
                "metadata": metadata,
                **self._billing_extras(promotion_code),
            },
            options={"idempotency_key": idempotency_key},
        )
        return subscription_view(sub.to_dict())

    # After a failure Stripe keeps (a 5xx), what the failed call may have made, found by our reference.

    def find_customer(self, email: str, reference: dict) -> str | None:
        page = self._call(
            "look for the customer", self._client.v1.customers.list, params={"email": email, "limit": 100}
        )
        return next((c.id for c in page.data if ours(c, reference)), None)

    def find_invoice(self, customer: str, reference: dict) -> InvoiceView | None:
        page = self._call(
            "look for the invoice", self._client.v1.invoices.list, params={"customer": customer, "limit": 100}
        )
        found = next((i for i in page.data if ours(i, reference)), None)
        return invoice_view(found.to_dict()) if found is not None else None

    def find_subscription(self, customer: str, reference: dict) -> SubscriptionView | None:
        page = self._call(
            "look for the subscription", self._client.v1.subscriptions.list, params={"customer": customer, "limit": 100}
        )
        found = next((s for s in page.data if ours(s, reference)), None)
        return subscription_view(found.to_dict()) if found is not None else None

    def finalize_invoice(self, invoice_id: str, idempotency_key: str) -> InvoiceView:
        check_id(invoice_id, "in")
        invoice = self._call(
            "finalise the invoice",
            self._client.v1.invoices.finalize_invoice,
            invoice_id,
            params={"auto_advance": False},
            options={"idempotency_key": idempotency_key},
        )
        return invoice_view(invoice.to_dict())

    def send_invoice(self, invoice_id: str, idempotency_key: str) -> InvoiceView:
        check_id(invoice_id, "in")
        invoice = self._call(
            "send the invoice",
            self._client.v1.invoices.send_invoice,
            invoice_id,
            options={"idempotency_key": idempotency_key},
        )
        return invoice_view(invoice.to_dict())

    def cancel_subscription(self, subscription_id: str, idempotency_key: str) -> SubscriptionView:
        check_id(subscription_id, "sub")
        sub = self._call(
            "cancel the subscription",
            self._client.v1.subscriptions.cancel,
            subscription_id,
            options={"idempotency_key": idempotency_key},
        )
        return subscription_view(sub.to_dict())

    def cancel_at_period_end(self, subscription_id: str, idempotency_key: str) -> SubscriptionView:
        """End the subscription when its paid period ends, without a refund: Stripe bills it no more."""
        check_id(subscription_id, "sub")
        sub = self._call(
            "change the subscription",
            self._client.v1.subscriptions.update,
            subscription_id,
            params={"cancel_at_period_end": True, "expand": ["latest_invoice.payments"]},
            options={"idempotency_key": idempotency_key},
        )
        return subscription_view(sub.to_dict())

    def change_subscription_quantity(
        self, subscription_id: str, item_id: str, quantity: int, idempotency_key: str
    ) -> SubscriptionView:
        """A new number of seats on the subscription's one item; Stripe prorates the period's rest."""
        check_id(subscription_id, "sub")
        sub = self._call(
            "change the subscription",
            self._client.v1.subscriptions.update,
            subscription_id,
            params={
                "items": [{"id": item_id, "quantity": quantity}],
                "proration_behavior": "create_prorations",
                "expand": ["latest_invoice.payments"],
            },
            options={"idempotency_key": idempotency_key},
        )
        return subscription_view(sub.to_dict())

    def create_portal_session(self, *, customer: str, return_url: str, locale: str) -> str:
        """A short-lived customer portal session, where the school manages its billing; its URL."""
        check_id(customer, "cus")
        session = self._call(
            "open the billing portal",
            self._client.v1.billing_portal.sessions.create,
            params={"customer": customer, "return_url": return_url, "locale": locale},
        )
        return session.url

    def _billing_extras(self, promotion_code: str | None) -> dict:
        """What an invoice or a subscription also carries: Stripe Tax, and the promotion code the admin gave."""
        extras = {}
        if self._offers.tax:
            extras["automatic_tax"] = {"enabled": True}
        if promotion_code:
            extras["discounts"] = [{"promotion_code": promotion_code}]
        return extras
