"""pyslirp: a userspace SLiRP — PPP on a serial line, its own TCP/IP stack, proxying to local services."""

__version__ = "0.1.0"
