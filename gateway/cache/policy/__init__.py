"""Every caching rule (RFC 9111 for a shared cache), as pure functions of headers, statuses and times.

Nothing here touches a store or a clock: callers pass ``now`` and the stored timestamps, so every rule
is tested table-driven without sleeping. By topic, lower ones first:

    dates        HTTP-dates (RFC 9110 §5.6.7)
    directives   Cache-Control, targeted fields (RFC 9213), Pragma: what a request or response asks
    validators   ETag and Last-Modified: revalidation, 304s, the client's own conditionals
    ranges       byte ranges: cutting a stored body, stored partial (206) answers and completing them
    freshness    lifetimes, ages, reuse, the stale windows and how long an entry is kept
    keys         which stored answers a request may meet: methods, keys, Vary, credentials, invalidation
    storable     the "never stored" rules

May import: ``gateway.messages`` only.
"""
