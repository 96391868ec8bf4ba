/* pbench: the guest side of pyslirp's end-to-end benchmarks (benchmarks/e2e/).
 *
 * A tiny static tool built into the interop rig's VM image (tests/interop/build_image.py):
 * busybox has no way to time a TCP round trip, hold thousands of connections or count
 * connections per second. Every mode prints one line "key=value ..." on stdout and exits 0 on
 * success, 1 on failure (the line then says what got done before it failed). Every mode is
 * bounded in time by alarm() (PBENCH_TIMEOUT seconds, default 600).
 *
 *   pbench down  HOST PORT BYTES [SECS]  ask the bulk service for BYTES (0: endless) and read
 *                                        them (or stop after SECS, or at SIGTERM); throughput as
 *                                        the client sees it
 *   pbench up    HOST PORT BYTES         send BYTES to the bulk service, wait for its count
 *   pbench rtt   HOST PORT COUNT GAP_MS  COUNT 1-byte echo round trips (TCP_NODELAY), GAP_MS
 *                                        apart; p50/p90/p99 in ms (fewer if PBENCH_RTT_BUDGET
 *                                        seconds run out first: n says how many)
 *   pbench hold  HOST PORT N INFLIGHT HOLD_S  open N connections (at most INFLIGHT connecting
 *                                        at once), echo-verify each, hold them HOLD_S seconds,
 *                                        verify all again, close
 *   pbench short HOST PORT SECS MAX      connect, 1-byte echo, close (client first), one at a
 *                                        time, for SECS or MAX connections; connections/s
 *   pbench serve PORT                    trivial responder on 127.0.0.1: echo until EOF, close
 *   pbench synflood HOST PORT COUNT      COUNT TCP SYNs from a raw socket, each from its own
 *                                        source port with a random ISN, at the rate the line
 *                                        takes them (a full queue: wait 1 ms, send it again);
 *                                        nothing answers them (the kernel resets the SYN-ACKs)
 *   pbench udpecho HOST PORT COUNT MAXSIZE  COUNT datagrams to a UDP echo service from one
 *                                        socket, one at a time, their sizes from 1 to MAXSIZE
 *                                        bytes, their bytes random; each must come back as it
 *                                        went (unanswered for 3 s: sent again, twice at most);
 *                                        how many did (the interop tests' UDP check)
 *
 * Bulk service protocol (benchmarks/e2e/hostsvc.py): the client sends "D <bytes>\n" and reads
 * until EOF, or "U <bytes>\n" followed by the bytes and reads "<count>\n".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "error=timeout\n";
    ssize_t r = write(1, msg, sizeof msg - 1);
    (void)r;
    _exit(1);
}

static volatile sig_atomic_t stop_flag;

static void on_term(int sig) {
    (void)sig;
    stop_flag = 1;
}

static struct sockaddr_in addr_of(const char *host, const char *port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(port));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        printf("error=bad_address host=%s\n", host);
        exit(1);
    }
    return sa;
}

static int dial(const struct sockaddr_in *sa, int nodelay) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (nodelay) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int write_all(int fd, const void *buf, size_t n);

/* A connection to the bulk service with its request sent ("D n": send me n bytes, "U n": take
 * n bytes); -1 (reported) when the connect fails. */
static int dial_bulk(const struct sockaddr_in *sa, char kind, unsigned long long want) {
    int fd = dial(sa, 0);
    if (fd < 0) {
        printf("error=connect errno=%d\n", errno);
        return -1;
    }
    char req[64];
    int n = snprintf(req, sizeof req, "%c %llu\n", kind, want);
    write_all(fd, req, (size_t)n);
    return fd;
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *sorted, int n, double p) {
    if (n == 0) return 0;
    int i = (int)(p / 100.0 * (n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

/* ------------------------------------------------------------------------------------------ */

static int mode_down(int argc, char **argv) {
    if (argc < 5) return 2;
    struct sockaddr_in sa = addr_of(argv[2], argv[3]);
    unsigned long long want = strtoull(argv[4], NULL, 10);
    double limit = argc > 5 ? atof(argv[5]) : 0;
    /* SIGTERM ends an endless download early, and it still reports (no SA_RESTART: read
     * returns EINTR) */
    struct sigaction sa_term;
    memset(&sa_term, 0, sizeof sa_term);
    sa_term.sa_handler = on_term;
    sigaction(SIGTERM, &sa_term, NULL);
    double t0 = now();
    int fd = dial_bulk(&sa, 'D', want);
    if (fd < 0) return 1;
    static char buf[1 << 16];
    unsigned long long got = 0;
    double first = 0, last = t0;
    for (;;) {
        if (stop_flag) break;
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        last = now();
        if (!got) first = last;
        got += (unsigned long long)r;
        if (limit > 0 && last - t0 >= limit) break;
    }
    close(fd);
    double total = last - t0, body = first ? last - first : 0;
    printf("bytes=%llu secs=%.6f body_secs=%.6f Bps=%.0f body_Bps=%.0f\n", got, total, body,
           total > 0 ? got / total : 0, body > 0 ? got / body : 0);
    return (want && got != want) ? 1 : 0;
}

static int mode_up(int argc, char **argv) {
    if (argc < 5) return 2;
    struct sockaddr_in sa = addr_of(argv[2], argv[3]);
    unsigned long long want = strtoull(argv[4], NULL, 10);
    static char buf[1 << 16];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(i * 2654435761u >> 13);
    double t0 = now();
    int fd = dial_bulk(&sa, 'U', want);
    if (fd < 0) return 1;
    unsigned long long sent = 0;
    while (sent < want) {
        size_t chunk = want - sent < sizeof buf ? (size_t)(want - sent) : sizeof buf;
        if (write_all(fd, buf, chunk) < 0) {
            printf("error=write errno=%d sent=%llu\n", errno, sent);
            return 1;
        }
        sent += chunk;
    }
    double t_sent = now();
    char reply[64];
    size_t have = 0;
    while (have < sizeof reply - 1) {
        ssize_t r = read(fd, reply + have, sizeof reply - 1 - have);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        have += (size_t)r;
        if (memchr(reply, '\n', have)) break;
    }
    reply[have] = 0;
    double t1 = now();
    close(fd);
    unsigned long long acked = strtoull(reply, NULL, 10);
    double total = t1 - t0;
    printf("bytes=%llu acked=%llu secs=%.6f send_secs=%.6f Bps=%.0f\n", sent, acked, total,
           t_sent - t0, total > 0 ? acked / total : 0);
    return acked == want ? 0 : 1;
}

static int mode_rtt(int argc, char **argv) {
    if (argc < 6) return 2;
    struct sockaddr_in sa = addr_of(argv[2], argv[3]);
    int count = atoi(argv[4]);
    double gap = atof(argv[5]) / 1000.0;
    int fd = dial(&sa, 1);
    if (fd < 0) {
        printf("error=connect errno=%d\n", errno);
        return 1;
    }
    double *s = calloc((size_t)(count > 0 ? count : 1), sizeof *s);
    int done = 0;
    /* stop sampling (and report what we have) once PBENCH_RTT_BUDGET seconds have passed */
    const char *b = getenv("PBENCH_RTT_BUDGET");
    double budget_end = b ? now() + atof(b) : 0;
    for (int i = 0; i < count; i++) {
        if (budget_end > 0 && now() > budget_end) break;
        char c = (char)('a' + i % 26), d = 0;
        double t0 = now();
        if (write_all(fd, &c, 1) < 0) break;
        ssize_t r;
        do r = read(fd, &d, 1); while (r < 0 && errno == EINTR);
        if (r != 1 || d != c) break;
        s[done++] = (now() - t0) * 1000.0;
        if (gap > 0 && i + 1 < count) {
            struct timespec ts = {(time_t)gap, (long)((gap - (time_t)gap) * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    close(fd);
    double sum = 0;
    for (int i = 0; i < done; i++) sum += s[i];
    qsort(s, (size_t)done, sizeof *s, cmp_double);
    printf("n=%d min=%.3f p50=%.3f p90=%.3f p99=%.3f max=%.3f mean=%.3f\n", done,
           done ? s[0] : 0, pct(s, done, 50), pct(s, done, 90), pct(s, done, 99),
           done ? s[done - 1] : 0, done ? sum / done : 0);
    return done == count ? 0 : 1;
}

/* hold: a small epoll state machine per connection: CONNECTING -> ECHOING -> HELD */
enum { C_IDLE, C_CONNECTING, C_ECHOING, C_HELD, C_FAILED };

struct conn {
    int fd;
    int state;
    uint32_t token;
    uint32_t got;
    int have;
};

static int hold_round(struct conn *c, int n, int epfd, const struct sockaddr_in *sa, int inflight,
                      int reconnect, int *failed, double deadline) {
    /* reconnect: open connections (state IDLE); otherwise re-verify HELD ones. */
    struct epoll_event evs[256];
    int next = 0, active = 0, held = 0;
    *failed = 0;
    if (!reconnect) {
        for (int i = 0; i < n; i++) {
            if (c[i].state != C_HELD) continue;
            c[i].token = c[i].token * 1103515245u + 12345u;
            c[i].have = 0;
            c[i].state = C_ECHOING;
            if (write(c[i].fd, &c[i].token, 4) != 4) {
                c[i].state = C_FAILED;
                (*failed)++;
                continue;
            }
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
            if (epoll_ctl(epfd, EPOLL_CTL_MOD, c[i].fd, &ev) < 0)
                epoll_ctl(epfd, EPOLL_CTL_ADD, c[i].fd, &ev);
            active++;
        }
        next = n;
    }
    for (;;) {
        while (reconnect && next < n && active < inflight) {
            struct conn *k = &c[next];
            k->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (k->fd < 0) {
                printf("error=socket errno=%d at=%d\n", errno, next);
                return held;
            }
            k->token = 0x9e3779b9u * (uint32_t)(next + 1);
            k->have = 0;
            int r = connect(k->fd, (const struct sockaddr *)sa, sizeof *sa);
            if (r < 0 && errno != EINPROGRESS) {
                k->state = C_FAILED;
                close(k->fd);
                k->fd = -1;
                (*failed)++;
                next++;
                continue;
            }
            k->state = C_CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)next};
            epoll_ctl(epfd, EPOLL_CTL_ADD, k->fd, &ev);
            active++;
            next++;
        }
        if (active == 0 && next >= n) break;
        double left = deadline - now();
        if (left <= 0) {
            printf("error=deadline ");
            break;
        }
        int m = epoll_wait(epfd, evs, 256, (int)(left * 1000) + 1);
        if (m < 0 && errno == EINTR) continue;
        for (int j = 0; j < m; j++) {
            struct conn *k = &c[evs[j].data.u32];
            if (k->state == C_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || write(k->fd, &k->token, 4) != 4) {
                    k->state = C_FAILED;
                    epoll_ctl(epfd, EPOLL_CTL_DEL, k->fd, NULL);
                    close(k->fd);
                    k->fd = -1;
                    (*failed)++;
                    active--;
                    continue;
                }
                k->state = C_ECHOING;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[j].data.u32};
                epoll_ctl(epfd, EPOLL_CTL_MOD, k->fd, &ev);
            } else if (k->state == C_ECHOING) {
                ssize_t r = read(k->fd, (char *)&k->got + k->have, (size_t)(4 - k->have));
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (r <= 0) {
                    k->state = C_FAILED;
                    epoll_ctl(epfd, EPOLL_CTL_DEL, k->fd, NULL);
                    close(k->fd);
                    k->fd = -1;
                    (*failed)++;
                    active--;
                    continue;
                }
                k->have += (int)r;
                if (k->have == 4) {
                    active--;
                    if (k->got != k->token) {
                        k->state = C_FAILED;
                        (*failed)++;
                    } else {
                        k->state = C_HELD;
                        held++;
                    }
                    struct epoll_event ev = {.events = 0, .data.u32 = evs[j].data.u32};
                    epoll_ctl(epfd, EPOLL_CTL_MOD, k->fd, &ev);
                }
            } else if (k->fd >= 0) {
                /* a held connection hung up (EPOLLHUP/ERR come even with no events asked):
                 * stop watching it; the next verify round finds it dead */
                epoll_ctl(epfd, EPOLL_CTL_DEL, k->fd, NULL);
            }
        }
    }
    return held;
}

static int mode_hold(int argc, char **argv) {
    if (argc < 7) return 2;
    struct sockaddr_in sa = addr_of(argv[2], argv[3]);
    int n = atoi(argv[4]), inflight = atoi(argv[5]);
    double hold_s = atof(argv[6]);
    double budget = getenv("PBENCH_HOLD_DEADLINE") ? atof(getenv("PBENCH_HOLD_DEADLINE")) : 120;
    struct conn *c = calloc((size_t)n, sizeof *c);
    for (int i = 0; i < n; i++) c[i].fd = -1;
    int epfd = epoll_create1(0);
    int failed = 0;
    double t0 = now();
    int held = hold_round(c, n, epfd, &sa, inflight, 1, &failed, t0 + budget);
    double t_open = now() - t0;
    printf("held=%d failed=%d open_secs=%.3f rate=%.1f\n", held, failed, t_open,
           t_open > 0 ? held / t_open : 0);
    fflush(stdout);
    /* The host reads the server's memory now (it waits for the line above). */
    if (hold_s > 0) {
        struct timespec ts = {(time_t)hold_s, (long)((hold_s - (time_t)hold_s) * 1e9)};
        nanosleep(&ts, NULL);
    }
    double t1 = now();
    int failed2 = 0;
    int verified = held ? hold_round(c, n, epfd, &sa, inflight, 0, &failed2, t1 + budget) : 0;
    double t_verify = now() - t1;
    printf("verified=%d failed2=%d verify_secs=%.3f\n", verified, failed2, t_verify);
    fflush(stdout);
    double t2 = now();
    for (int i = 0; i < n; i++)
        if (c[i].fd >= 0) close(c[i].fd);
    printf("closed_secs=%.3f\n", now() - t2);
    return (held == n && verified == n) ? 0 : 1;
}

static int mode_short(int argc, char **argv) {
    if (argc < 6) return 2;
    struct sockaddr_in sa = addr_of(argv[2], argv[3]);
    double secs = atof(argv[4]);
    long max = atol(argv[5]);
    long ok = 0, bad = 0;
    double t0 = now(), t = t0;
    while ((max <= 0 || ok + bad < max) && (t - t0) < secs) {
        int fd = dial(&sa, 1);
        if (fd < 0) {
            bad++;
            if (bad > 50 && bad > ok) break;
            t = now();
            continue;
        }
        char ch = 'x', d = 0;
        ssize_t r = -1;
        if (write_all(fd, &ch, 1) == 0) {
            do r = read(fd, &d, 1); while (r < 0 && errno == EINTR);
        }
        close(fd);
        if (r == 1 && d == ch) ok++; else bad++;
        t = now();
    }
    double el = t - t0;
    printf("ok=%ld failed=%ld secs=%.3f rate=%.1f\n", ok, bad, el, el > 0 ? ok / el : 0);
    return ok > 0 ? 0 : 1;
}

static int mode_serve(int argc, char **argv) {
    if (argc < 3) return 2;
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = addr_of("127.0.0.1", argv[2]);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 128) < 0) {
        printf("error=listen errno=%d\n", errno);
        return 1;
    }
    alarm(0);
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char buf[512];
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0)
            if (write_all(fd, buf, (size_t)r) < 0) break;
        close(fd);
    }
}

/* synflood: the one's-complement sum of RFC 1071, continued from `sum` */
static uint32_t sum16(const uint8_t *p, size_t n, uint32_t sum) {
    for (; n > 1; p += 2, n -= 2) sum += (uint32_t)(p[0] << 8 | p[1]);
    if (n) sum += (uint32_t)(p[0] << 8);
    return sum;
}

static uint16_t fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static int mode_synflood(int argc, char **argv) {
    if (argc < 5) return 2;
    struct sockaddr_in sa = addr_of(argv[2], argv[3]);
    long count = atol(argv[4]);
    if (count < 0 || count > 64512) {
        printf("error=count max=64512\n");  /* one source port each */
        return 1;
    }
    /* Our address toward HOST, for the checksum's pseudo-header: what a UDP socket connected
     * there is bound to. */
    struct sockaddr_in me;
    socklen_t me_len = sizeof me;
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    if (u < 0 || connect(u, (const struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(u, (struct sockaddr *)&me, &me_len) < 0) {
        printf("error=source_address errno=%d\n", errno);
        return 1;
    }
    close(u);
    /* The kernel adds the IP header (no IP_HDRINCL). IP_RECVERR: a full queue on the way to the
     * line fails the send with ENOBUFS instead of dropping the SYN silently. A small send buffer
     * keeps only a few SYNs queued in front of the line, so the flood goes at the line's rate
     * and the queue's own policing (fq_codel) never drops one. Whatever the socket receives
     * (every TCP segment for this host) is of no interest: a small buffer, dropped. */
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_TCP);
    if (fd < 0) {
        printf("error=raw_socket errno=%d\n", errno);
        return 1;
    }
    int one = 1, small = 4096;
    setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    srandom((unsigned)(getpid() ^ (unsigned)(now() * 1e6)));
    long first_port = 1024 + random() % 64512, retries = 0;
    const uint8_t *src = (const uint8_t *)&me.sin_addr, *dst = (const uint8_t *)&sa.sin_addr;
    double t0 = now();
    long sent = 0;
    for (; sent < count; sent++) {
        uint16_t sport = (uint16_t)(1024 + (first_port - 1024 + sent) % 64512);
        uint32_t isn = (uint32_t)random() << 1 ^ (uint32_t)random();
        uint8_t seg[24] = {0};  /* a 20-byte header and the MSS option */
        seg[0] = (uint8_t)(sport >> 8), seg[1] = (uint8_t)sport;
        memcpy(seg + 2, &sa.sin_port, 2);
        seg[4] = (uint8_t)(isn >> 24), seg[5] = (uint8_t)(isn >> 16);
        seg[6] = (uint8_t)(isn >> 8), seg[7] = (uint8_t)isn;
        seg[12] = 6 << 4;             /* data offset: 6 words */
        seg[13] = 0x02;               /* SYN */
        seg[14] = 0xfa, seg[15] = 0xf0; /* window 64240 */
        seg[20] = 2, seg[21] = 4, seg[22] = 0x05, seg[23] = 0xb4; /* MSS 1460 */
        uint8_t pseudo[12] = {src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3],
                              0, IPPROTO_TCP, 0, sizeof seg};
        uint16_t ck = fold(sum16(seg, sizeof seg, sum16(pseudo, sizeof pseudo, 0)));
        seg[16] = (uint8_t)(ck >> 8), seg[17] = (uint8_t)ck;
        for (;;) {
            if (sendto(fd, seg, sizeof seg, 0, (const struct sockaddr *)&sa, sizeof sa) == sizeof seg) break;
            if (errno == ENOBUFS || errno == EAGAIN || errno == EWOULDBLOCK) {
                retries++;
                poll(NULL, 0, 1);
            } else if (errno != EINTR) {
                printf("error=sendto errno=%d sent=%ld seconds=%.3f\n", errno, sent, now() - t0);
                return 1;
            }
        }
    }
    double el = now() - t0;
    close(fd);
    printf("sent=%ld seconds=%.3f rate=%.1f retries=%ld\n", sent, el, el > 0 ? sent / el : 0, retries);
    return 0;
}

/* udpecho: read one datagram within `ms` milliseconds: its length, 0 on timeout, -1 on error */
static ssize_t recv_within(int fd, char *buf, size_t size, int ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do r = poll(&p, 1, ms); while (r < 0 && errno == EINTR);
    if (r <= 0) return r;
    ssize_t n;
    do n = recv(fd, buf, size, 0); while (n < 0 && errno == EINTR);
    return n;
}

static int mode_udpecho(int argc, char **argv) {
    if (argc < 6) return 2;
    struct sockaddr_in sa = addr_of(argv[2], argv[3]);
    long count = atol(argv[4]), max = atol(argv[5]);
    enum { WAIT_MS = 3000, TRIES = 3 };
    static char out[65507], in[65536];
    if (count < 1 || max < 1 || max > (long)sizeof out) {
        printf("error=arguments max_size=%zu\n", sizeof out);
        return 1;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);  /* connected: only the service's replies come in */
    if (fd < 0 || connect(fd, (const struct sockaddr *)&sa, sizeof sa) < 0) {
        printf("error=connect errno=%d\n", errno);
        return 1;
    }
    srandom((unsigned)(getpid() ^ (unsigned)(now() * 1e6)));
    long intact = 0, lost = 0, stray = 0, resent = 0;
    for (long i = 0; i < count; i++) {
        size_t size = (size_t)(count > 1 ? 1 + (max - 1) * i / (count - 1) : max);
        for (size_t k = 0; k < size; k++) out[k] = (char)random();
        int echoed = 0;
        for (int try = 0; try < TRIES && !echoed; try++) {
            resent += try > 0;
            if (send(fd, out, size, 0) < 0) {
                printf("error=send errno=%d at=%ld intact=%ld\n", errno, i, intact);
                return 1;
            }
            /* a reply other than these bytes (damaged, or late for an earlier one) is a stray */
            for (double deadline = now() + WAIT_MS / 1000.0; !echoed;) {
                int left = (int)((deadline - now()) * 1000);
                ssize_t got = left > 0 ? recv_within(fd, in, sizeof in, left) : 0;
                if (got < 0) {
                    printf("error=recv errno=%d at=%ld intact=%ld\n", errno, i, intact);
                    return 1;
                }
                if (got == 0) break;
                if ((size_t)got == size && !memcmp(in, out, size)) echoed = 1;
                else stray++;
            }
        }
        if (echoed) intact++;
        else lost++;
    }
    close(fd);
    printf("sent=%ld intact=%ld lost=%ld stray=%ld resent=%ld\n", count, intact, lost, stray, resent);
    return intact == count ? 0 : 1;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    const char *t = getenv("PBENCH_TIMEOUT");
    alarm(t ? (unsigned)atoi(t) : 600);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc = 2;
    if (argc >= 2) {
        if (!strcmp(argv[1], "down")) rc = mode_down(argc, argv);
        else if (!strcmp(argv[1], "up")) rc = mode_up(argc, argv);
        else if (!strcmp(argv[1], "rtt")) rc = mode_rtt(argc, argv);
        else if (!strcmp(argv[1], "hold")) rc = mode_hold(argc, argv);
        else if (!strcmp(argv[1], "short")) rc = mode_short(argc, argv);
        else if (!strcmp(argv[1], "serve")) rc = mode_serve(argc, argv);
        else if (!strcmp(argv[1], "synflood")) rc = mode_synflood(argc, argv);
        else if (!strcmp(argv[1], "udpecho")) rc = mode_udpecho(argc, argv);
    }
    if (rc == 2)
        fprintf(stderr, "usage: pbench down|up|rtt|hold|short|serve|synflood|udpecho ... (see the source)\n");
    return rc;
}
