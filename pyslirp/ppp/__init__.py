"""Sans-IO PPP: the RFC 1661 automaton, LCP, IPCP, authentication, VJ compression and the link."""
