"""Sans-IO IPv4, ICMP, UDP and TCP, and the stack that demultiplexes them."""
