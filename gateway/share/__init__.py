"""What a gateway's workers share without Redis: the instance bus (an mmap'd file of messages).

May import: nothing else of the gateway.
"""
