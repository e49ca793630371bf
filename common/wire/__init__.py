"""fedcare's wire format: one typed definition of every message between server and hospitals.

``settings`` (what the server sends), ``replies`` (what a hospital sends, with the per-mode
manifest), ``statistics`` (evaluation sums), ``fields`` (the typed readers) and ``records``
(the only pack/unpack functions, Flower's RecordDict on one side, frozen dataclasses on the
other). Every malformed field raises ``WireFormatError`` naming it.
"""
