"""Whom the admin pays and for what: the vendor (VENDOR_NAME, else the Stripe Product's name), the
product's name and description and the price with its period, and where to reach the vendor
(SUPPORT_CONTACT), for every page of the flow.

The product is what the registration was shown and priced at: its name and description are stored on
the registration when it is opened (from the Price read with its Product expanded), beside the
amount. A page that belongs to no registration (a damaged link, LTIaaS down) names the product of the
Price last read from Stripe by this process, else that of the newest registration; it never calls
Stripe itself.
"""

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask, current_app
from sqlalchemy import select

from paygate.core import languages
from paygate.core.config import parse_logo, parse_support


def logo_origin(url: str | None) -> str | None:
    """The origin the page's CSP img-src must allow for the logo."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True, slots=True)
class Identity:
    vendor: str | None
    product: str | None
    description: str | None
    price: str | None  # "49.00 USD per year", in the request's language


# LTIaaS's familyCode -> the LMS's name as admins know it.
LMS_NAMES = {
    "canvas": "Canvas",
    "moodle": "Moodle",
    "desire2learn": "Brightspace",
    "d2l": "Brightspace",
    "brightspace": "Brightspace",
    "sakai": "Sakai",
    "blackboard": "Blackboard Learn",
    "schoology": "Schoology",
    "openedx": "Open edX",
    "ilias": "ILIAS",
    "itslearning": "itslearning",
}
_BUILD = re.compile(r"\s*\(.*\)\s*$")  # Moodle's "4.4.1+ (Build: 20240705)"


def lms_name(reg) -> str:
    """ "Canvas (cloud)", "Moodle 4.4.1+", "Brightspace 20.24": the LMS as the admin knows it."""
    family = (reg.lms_family or "").strip()
    name = LMS_NAMES.get(family.lower(), family)
    version = _BUILD.sub("", (reg.lms_version or "").strip())[:40]
    if not name:
        return languages.gettext("An LMS that did not give its name")
    if version.lower() == "cloud":
        return languages.gettext("%(lms)s (cloud)", lms=name)
    return f"{name} {version}" if version else name


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.jinja_env.globals.update(
        support=parse_support(settings.support_contact),
        vendor_logo_url=parse_logo(settings.vendor_logo_url, settings.app_env != "production"),
        page_identity=without_registration,
    )


def of(reg) -> Identity:
    """The identity a registration's pages show (a Registration or a FlowView)."""
    product, description = getattr(reg, "product_name", None), getattr(reg, "product_description", None)
    if product is None:  # opened before products were stored
        product, description = _last_read_product()
    return Identity(
        vendor=current_app.config["SETTINGS"].vendor_name or product,
        product=product,
        description=description,
        price=languages.price_line(reg.amount, reg.currency, reg.price_interval),
    )


def without_registration() -> Identity:
    """For a page that belongs to no registration: what is known without asking Stripe."""
    settings = current_app.config["SETTINGS"]
    price = _cached_price()
    if price is not None:
        line = languages.price_line(price.unit_amount, price.currency, price.period) if price.unit_amount else None
        return Identity(
            vendor=settings.vendor_name or price.product_name,
            product=price.product_name,
            description=price.product_description,
            price=line,
        )
    product = _newest_product()
    return Identity(vendor=settings.vendor_name or product, product=product, description=None, price=None)


def _cached_price():
    from paygate.gateways import payments

    try:
        return payments.gateway().cached_price(current_app.config["SETTINGS"].stripe_price_id)
    except Exception:  # noqa: BLE001 - never let a page about another failure fail on this
        return None


def _last_read_product() -> tuple[str | None, str | None]:
    price = _cached_price()
    return (price.product_name, price.product_description) if price is not None else (None, None)


def _newest_product() -> str | None:
    from paygate.core.db import db
    from paygate.core.models import Registration

    try:
        return db.session.scalars(
            select(Registration.product_name)
            .where(Registration.product_name.is_not(None))
            .order_by(Registration.id.desc())
            .limit(1)
        ).first()
    except Exception:  # noqa: BLE001 - the database is what failed: the page is shown without the product
        db.session.rollback()
        return None
