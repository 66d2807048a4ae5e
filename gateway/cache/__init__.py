"""The RFC 9111 response cache: its rules, its stores, the cache a request meets and one request's dealings with it.

Owns, lower modules first (each imports only those before it):

    policy/      every caching rule: freshness, stale windows, TTLs, keys, ``Vary``, directives, validators
    entry        a stored answer (``Entry``), how it is built and encoded; ``Found``: one with its key
    lua, store   the per-worker and Redis stores (their Lua scripts in ``*.lua`` beside ``store``)
    tier         per-worker copies of hot Redis entries; ``broadcast``: drops reaching sibling workers
    coalescing   what a request leads (``Lead``) while others wait for its answer
    answers      the client's answer built from an entry
    passthrough  the exchange as the forwarder drives it, passing everything through
    exchange     ``ReadExchange`` (a GET or HEAD) and ``WriteExchange`` (a write that invalidates)
    responses    ``ResponseCache``: the cache a request meets (lookup, save, invalidate, purge, snapshot)

Names: an *entry* is one stored variant; a *key* names one URL, shared or personal (credentials);
a *group* is the path its keys are indexed under; an *exchange* is one request's dealings with the
cache; a *lead* is the one fetch per key that others wait for; *the store* is where entries live.
Stores ``put``; the cache ``save``s (choosing key and TTL by the rules).

May import: ``gateway.redis``, ``gateway.share``, ``gateway.config``, ``gateway.errors``,
``gateway.messages``, ``gateway.clock``.
"""
