"""Helpers the tests share (not fixtures: those are in the conftest.py files): apps and databases, the
admin's flow, webhooks, operators, licences, fulfilment, servers and browsers."""
