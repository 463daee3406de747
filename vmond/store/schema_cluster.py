"""Migration 16's schema: leases, so that several central nodes on one database share their duties (issue 19).

A lease is a row naming what is held (``node:<name>`` while a node is alive, ``duty:<what>`` for a duty that must
run on one node at a time, ``adopt:<name>`` while a survivor empties a dead node's broker session), who holds it
(``central.node``) and until when, by the database's clock (see :mod:`vmond.store.leases`).

Portable SQL: this one script runs unchanged on SQLite and PostgreSQL (TEXT columns, a text primary key, no
generated id). Times are fixed-width ISO 8601 UTC text, as every time the store keeps, so text order is time order.
"""

from __future__ import annotations

SCHEMA_16 = """
CREATE TABLE "lease" (
    "name" TEXT NOT NULL PRIMARY KEY,
    "holder" TEXT NOT NULL,
    "expires_at" TEXT NOT NULL,
    "taken_at" TEXT NOT NULL
);
"""
