"""In a real browser (Debian's chromium): the admin, the operator, accessibility."""
