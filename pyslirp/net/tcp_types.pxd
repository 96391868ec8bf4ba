# tcp_types.py is compiled with Cython in pure-Python mode like the other protocol cores (see
# tcp.pxd): its classes are Python classes (events, configuration), so nothing is declared here.
