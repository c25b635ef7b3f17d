"""Storage: the only package that speaks SQL.

``base.Repository`` is the boundary the rest of magray codes against; ``store.Store`` is
its SQLite implementation (``reader.Reader``: the read-only subset ``magray status``
uses; ``connection``: connecting, and SQLite's failures as magray's errors;
``migrations``: the numbered schema; ``snapshot``: consistent copies for backups and
loading one back on restore)."""
