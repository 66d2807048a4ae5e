"""Hash tags: which keys a Redis Cluster keeps together in one slot.

A cluster puts a key in the slot of its hash tag (the text between its first ``{`` and the next
``}``), or of the whole key when it has none. The keys one Lua script touches must share a slot, so
they share a tag; and the tag is as narrow as the script allows, so the load spreads over every
primary. The gateway's tags::

    cache entries, their path index, their locks   {<8 hex of the path>}   (this module)
    one service's breaker                          {<service name>}
    one client's rate limits under one rule        {<32 hex of service, rule and client>}

Off a cluster a tag is only part of the key's name.
"""

from __future__ import annotations

import hashlib

TAG_LENGTH = 8
ANY_TAG = "{" + "?" * TAG_LENGTH + "}"  # a SCAN pattern's stand-in for any tag of this module


def hash_tag(text: str) -> str:
    """``{<8 hex digits>}`` for ``text``: keys named with it share a cluster slot, other texts' spread out."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    return "{" + digest[:TAG_LENGTH] + "}"
