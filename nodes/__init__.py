"""Built-in node kinds: one module per kind, each registering itself with ``@node_kind``.

Nothing here lists the kinds; ``alphapulse.kinds.load_kinds()`` imports every module in this
package. Kinds never import each other.
"""
