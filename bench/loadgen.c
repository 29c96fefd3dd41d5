/*
 * loadgen: a WebSocket load generator for bench/run.py. One thread, epoll, non-blocking
 * sockets with TCP_NODELAY, no dependencies beyond libc and Linux.
 *
 *     gcc -O2 -Wall -o bench/build/loadgen bench/loadgen.c
 *     loadgen echo    -p PORT -c CONNS -P INFLIGHT -s SIZE -d SECS -w WARMUP
 *     loadgen connect -p PORT -c CONCURRENCY -d SECS
 *     loadgen hold    -p PORT -n N -c CONCURRENCY -d SECS
 *     loadgen selftest
 *
 * It is a client of RFC 6455 written from the RFC: it sends the opening handshake with a
 * random Sec-WebSocket-Key and checks the server's 101 and Sec-WebSocket-Accept (SHA-1 and
 * base64 are below); it sends masked frames and parses the server's frames as a stream
 * (7/16/64-bit lengths, continuation frames, pings answered with pongs, close); it closes
 * politely: a close frame, then the server's close frame, then the server closes TCP first
 * (RFC 6455 section 7.1.1), so no TIME_WAIT piles up on this side.
 *
 * It must cost far less per message than the servers it measures. Message frames are built
 * and masked once at start-up (a few variants with different random content and keys) and
 * then only pointed at: sending is one writev per connection per batch. Each readiness event
 * is one read into a shared buffer, parsed in place: echoed payloads are compared with what
 * was sent (--no-verify skips it) without being copied.
 *
 * The result is ONE line of JSON on stdout. Every mode has a hard deadline (-t); hold mode
 * prints "READY {...}" once its connections are open. Exit status: 0 when every connection
 * opened, every echo matched and no protocol error was seen; 1 otherwise; 2 on bad usage;
 * 3 when the hard deadline fired.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- SHA-1 (FIPS 180-4) and base64 (RFC 4648), for Sec-WebSocket-Accept -------------- */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6; }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rol32(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

static void sha1(const void *data, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const uint8_t *p = data;
    size_t left = len;
    for (; left >= 64; left -= 64, p += 64)
        sha1_block(h, p);
    /* The tail, a 0x80 byte, zeros, and the length in bits (big-endian): one or two blocks. */
    uint8_t tail[128] = {0};
    memcpy(tail, p, left);
    tail[left] = 0x80;
    size_t blocks = left + 9 <= 64 ? 1 : 2;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[blocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t i = 0; i < blocks; i++)
        sha1_block(h, tail + 64 * i);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = h[i] >> 24; out[4 * i + 1] = h[i] >> 16;
        out[4 * i + 2] = h[i] >> 8; out[4 * i + 3] = h[i];
    }
}

static void base64(const uint8_t *in, size_t len, char *out)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) v |= in[i + 2];
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = i + 1 < len ? abc[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? abc[v & 63] : '=';
    }
    out[o] = 0;
}

/* RFC 6455 section 4.2.2: base64(SHA-1(key + GUID)); `accept` holds 29 bytes. */
static void accept_for(const char *key, char *accept)
{
    char buf[128];
    int n = snprintf(buf, sizeof buf, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t digest[20];
    sha1(buf, (size_t)n, digest);
    base64(digest, 20, accept);
}

#ifndef LOADGEN_CRYPTO_ONLY  /* servers/c_echo.c borrows the functions above */

/* ---- client helpers: shared with fanout.c (LOADGEN_HELPERS_ONLY) ----------------------- */

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng_state;

static uint64_t rng(void)  /* xorshift64*: payload bytes only, not keys */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static void random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            perror("getrandom");
            exit(1);
        }
        p += got;
        n -= (size_t)got;
    }
}

/* utime + stime of a process in clock ticks, or -1 (fields 14 and 15 of /proc/PID/stat). */
static void proc_ticks(int pid, long long *user, long long *sys)
{
    *user = *sys = -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return;
    long long u, s;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld", &u, &s) == 2) {
        *user = u;
        *sys = s;
    }
}

#define MAX_CPUS 64
struct cores { int n; long long busy[MAX_CPUS], total[MAX_CPUS]; };

static void read_cores(struct cores *c)
{
    c->n = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f) && c->n < MAX_CPUS) {
        if (strncmp(line, "cpu", 3) != 0 || !isdigit((unsigned char)line[3])) continue;
        long long v[8] = {0};
        sscanf(line, "%*s %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]);
        long long total = 0;
        for (int i = 0; i < 8; i++) total += v[i];
        c->busy[c->n] = total - v[3] - v[4];  /* not idle, not iowait: softirq counts */
        c->total[c->n] = total;
        c->n++;
    }
    fclose(f);
}

static size_t build_header(uint8_t *h, int opcode, uint64_t len, const uint8_t key[4])
{
    size_t n = 0;
    h[n++] = 0x80 | opcode;  /* FIN */
    if (len < 126) {
        h[n++] = 0x80 | len;
    } else if (len < 65536) {
        h[n++] = 0x80 | 126;
        h[n++] = len >> 8; h[n++] = len;
    } else {
        h[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) h[n++] = len >> (8 * i);
    }
    memcpy(h + n, key, 4);
    return n + 4;
}

/* One header of a response head, by name (case-insensitive), trimmed; NULL if absent. */
static const char *header(const char *head, const char *name, size_t *vlen)
{
    size_t want = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line && line[2];
         line = strstr(line + 2, "\r\n")) {
        const char *n = line + 2, *colon = strchr(n, ':'), *end = strstr(n, "\r\n");
        if (!colon || !end || colon > end || (size_t)(colon - n) != want ||
            strncasecmp(n, name, want) != 0)
            continue;
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        size_t len = (size_t)(end - v);
        while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
        *vlen = len;
        return v;
    }
    return NULL;
}

/* The opening handshake response (RFC 6455 section 4.1): status 101, Upgrade: websocket,
 * and the Sec-WebSocket-Accept computed from our key. NULL when it is right. */
static const char *check_response(char *head, const char *accept)
{
    if (strncmp(head, "HTTP/1.1 101", 12) != 0 || (head[12] != ' ' && head[12] != '\r'))
        return "handshake: status is not 101";
    size_t len;
    const char *v = header(head, "upgrade", &len);
    if (!v || len != 9 || strncasecmp(v, "websocket", 9) != 0)
        return "handshake: no Upgrade: websocket";
    v = header(head, "sec-websocket-accept", &len);
    if (!v) return "handshake: no Sec-WebSocket-Accept";
    if (len != 28 || memcmp(v, accept, 28) != 0) return "handshake: wrong Sec-WebSocket-Accept";
    return NULL;
}

#ifndef LOADGEN_HELPERS_ONLY  /* fanout.c borrows the functions above */

/* ---- options ---------------------------------------------------------------------------- */

enum mode { ECHO, CONNECT, HOLD, SELFTEST };

static struct {
    enum mode mode;
    const char *host, *path;
    int port, conns, inflight, count, server_pid, verify, text;
    size_t size;
    double secs, warmup, timeout;
} opt = {.host = "127.0.0.1", .path = "/", .conns = 10, .inflight = 1, .count = 1000,
         .verify = 1, .size = 64, .secs = 2.0, .warmup = 0.5, .timeout = -1};

#define VARIANTS 8            /* prebuilt message frames, each its own content and key */
#define RBUF (256 * 1024)     /* the shared read buffer */
#define CONNECT_TIMEOUT 10.0  /* seconds for TCP connect + opening handshake */
#define CLOSE_TIMEOUT 3.0     /* seconds for the closing handshake before a reset */
#define HS_MAX 4096           /* largest handshake response accepted */

/* ---- clock, randomness, accounting ------------------------------------------------------ */

static double now;  /* CLOCK_MONOTONIC seconds, refreshed once per loop iteration */

/* What the measured window is compared across: taken at its start and at its end. */
struct snapshot {
    double t;
    long long srv_user, srv_sys;
    double self_user, self_sys;
    struct cores cores;
};

static void take_snapshot(struct snapshot *s)
{
    s->t = now;
    s->srv_user = s->srv_sys = -1;
    if (opt.server_pid > 0) proc_ticks(opt.server_pid, &s->srv_user, &s->srv_sys);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->self_user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6;
    s->self_sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    read_cores(&s->cores);
}

/* Latency histogram: 1 us buckets below 65.536 ms, then 1.024 ms buckets up to ~67 s. */
#define FINE 65536
#define COARSE 65536
static uint32_t hist[FINE + COARSE];
static uint64_t hist_n;
static double lat_max;

static void hist_add(double secs)
{
    uint64_t us = (uint64_t)(secs * 1e6 + 0.5);
    size_t b = us < FINE ? us : FINE + (us >> 10) - (FINE >> 10);
    if (b >= FINE + COARSE) b = FINE + COARSE - 1;
    hist[b]++;
    hist_n++;
    if (secs > lat_max) lat_max = secs;
}

static void hist_reset(void)
{
    memset(hist, 0, sizeof hist);
    hist_n = 0;
    lat_max = 0;
}

static double hist_pct(double q)  /* microseconds */
{
    if (hist_n == 0) return 0;
    uint64_t want = (uint64_t)(q * (double)hist_n), seen = 0;
    for (size_t b = 0; b < FINE + COARSE; b++) {
        seen += hist[b];
        if (seen > want)
            return b < FINE ? (double)b : (double)(((b - FINE) + (FINE >> 10)) << 10);
    }
    return lat_max * 1e6;
}

/* ---- the prebuilt frames ---------------------------------------------------------------- */

static uint8_t *payload[VARIANTS];  /* what the server must echo */
static uint8_t *frame[VARIANTS];    /* the same, framed and masked, ready to send */
static size_t frame_len;
static uint8_t close_frame[8];      /* masked close, code 1000 */

static void build_frames(void)
{
    for (int v = 0; v < VARIANTS; v++) {
        payload[v] = malloc(opt.size ? opt.size : 1);
        frame[v] = malloc(opt.size + 14);
        if (!payload[v] || !frame[v]) { perror("malloc"); exit(1); }
        for (size_t i = 0; i < opt.size; i++) {
            uint8_t b = (uint8_t)rng();
            payload[v][i] = opt.text ? (uint8_t)('a' + b % 26) : b;  /* text stays UTF-8 */
        }
        uint8_t key[4];
        random_bytes(key, 4);
        size_t h = build_header(frame[v], opt.text ? 1 : 2, opt.size, key);
        for (size_t i = 0; i < opt.size; i++) frame[v][h + i] = payload[v][i] ^ key[i & 3];
        frame_len = h + opt.size;
    }
    uint8_t key[4];
    random_bytes(key, 4);
    size_t h = build_header(close_frame, 8, 2, key);
    close_frame[h] = (1000 >> 8) ^ key[0];
    close_frame[h + 1] = (1000 & 0xff) ^ key[1];
}

/* ---- connections ------------------------------------------------------------------------ */

enum state { FREE, CONNECTING, HANDSHAKE, OPEN, CLOSING, CLOSED_BY_PEER };

struct conn {
    int fd;
    uint8_t state;
    uint8_t want_out;       /* EPOLLOUT registered */
    uint8_t got_close;      /* the server's close frame arrived */
    uint8_t pong_queued;
    uint8_t in_payload;     /* parsing a frame's payload (else its header) */
    uint8_t hdr_have, hdr_need, fin, op, msg_op, ctl_have;
    uint8_t hdr[14];
    uint8_t ctl[125];
    uint8_t pong[131];
    uint64_t frame_left, msg_got;
    double started, close_deadline;
    char *hs;               /* the handshake response while it arrives */
    int hs_len;
    char accept[29];
    unsigned seq;           /* which variant to send next */
    /* messages sent and not yet echoed, oldest first: variant and time sent */
    uint8_t *ring_v;
    double *ring_t;
    int ring_head, ring_n;
    /* frames queued for writing: q[q_first .. q_first + q_n) */
    struct iovec *q;
    int q_first, q_n, q_cap;
};

static struct conn *conns;
static int nconns;
static int ep;
static uint8_t *rbuf;
static struct sockaddr_in addr;

static struct {
    long long opened, failed, msgs, msgs_all, clean, forced, unclean, dropped, cycles;
    long long protocol_errors, verify_errors;
    char first_error[160];
} st;

static void note_error(const char *fmt, ...)
{
    if (st.first_error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st.first_error, sizeof st.first_error, fmt, ap);
    va_end(ap);
}

static void watch(struct conn *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - conns)};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0) { perror("epoll_ctl"); exit(1); }
}

static void want_out(struct conn *c, int on)
{
    if (c->want_out == on) return;
    c->want_out = (uint8_t)on;
    watch(c, EPOLLIN | (on ? EPOLLOUT : 0), EPOLL_CTL_MOD);
}

/* Release the connection's socket. abortive: RST (SO_LINGER 0), so no TIME_WAIT is left. */
static int live;         /* connections with a socket */
static int handshaking;  /* ... of which not open yet */
static int closing;      /* ... of which in the closing handshake */

static void conn_release(struct conn *c, int abortive)
{
    if (c->state == CONNECTING || c->state == HANDSHAKE) {
        handshaking--;
        st.failed++;
    }
    if (c->state == CLOSING || c->state == CLOSED_BY_PEER) closing--;
    if (c->state != FREE) live--;
    if (c->fd >= 0) {
        if (abortive) {
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(c->fd);  /* also leaves the epoll set */
    }
    c->fd = -1;
    c->state = FREE;
    free(c->hs);
    c->hs = NULL;
}

static void conn_fail(struct conn *c, const char *why)
{
    note_error("%s", why);
    conn_release(c, 1);
}

static int conn_start(struct conn *c)
{
    free(c->hs);
    int idx = (int)(c - conns);
    uint8_t *ring_v = c->ring_v;
    double *ring_t = c->ring_t;
    struct iovec *q = c->q;
    int q_cap = c->q_cap;
    memset(c, 0, sizeof *c);
    c->ring_v = ring_v; c->ring_t = ring_t; c->q = q; c->q_cap = q_cap;
    c->seq = (unsigned)idx;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->state = FREE;
        st.failed++;
        note_error("socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = CONNECTING;
    c->started = now;
    live++;
    handshaking++;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        char why[96];
        snprintf(why, sizeof why, "connect: %s", strerror(errno));
        conn_fail(c, why);
        return -1;
    }
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    c->want_out = 1;
    return 0;
}

static int flush(struct conn *c)
{
    while (c->q_n > 0) {
        int n = c->q_n < IOV_MAX ? c->q_n : IOV_MAX;
        ssize_t w = writev(c->fd, c->q + c->q_first, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return -1;
        }
        while (w > 0) {
            struct iovec *v = &c->q[c->q_first];
            if ((size_t)w >= v->iov_len) {
                w -= (ssize_t)v->iov_len;
                c->q_first++;
                c->q_n--;
            } else {
                v->iov_base = (uint8_t *)v->iov_base + w;
                v->iov_len -= (size_t)w;
                w = 0;
            }
        }
    }
    if (c->q_n == 0) {
        c->q_first = 0;
        c->pong_queued = 0;
    }
    want_out(c, c->q_n > 0);
    return 0;
}

static void enqueue(struct conn *c, const void *p, size_t len)
{
    if (c->q_first + c->q_n == c->q_cap) {
        memmove(c->q, c->q + c->q_first, sizeof *c->q * (size_t)c->q_n);
        c->q_first = 0;
    }
    c->q[c->q_first + c->q_n++] = (struct iovec){(void *)p, len};
}

/* Queue one more message (the caller flushes). */
static void send_message(struct conn *c)
{
    unsigned v = c->seq++ % VARIANTS;
    int slot = (c->ring_head + c->ring_n) % opt.inflight;
    c->ring_v[slot] = (uint8_t)v;
    c->ring_t[slot] = now;
    c->ring_n++;
    enqueue(c, frame[v], frame_len);
}

static void send_close(struct conn *c)
{
    enqueue(c, close_frame, sizeof close_frame);
    if (c->state != CLOSED_BY_PEER) closing++;
    c->state = CLOSING;
    c->close_deadline = now + CLOSE_TIMEOUT;
}

/* ---- the modes' reactions --------------------------------------------------------------- */

enum phase { OPENING, WARMUP, MEASURE, DRAIN, DONE };
static enum phase phase;
static int sending;         /* echo: new messages follow echoes */
static long long started_total;

static void on_open(struct conn *c)
{
    st.opened++;
    handshaking--;
    if (opt.mode == CONNECT) {
        if (phase == MEASURE) hist_add(now - c->started);
        send_close(c);
    }
}

static void on_message(struct conn *c)
{
    if (c->ring_n == 0) {
        st.protocol_errors++;
        note_error("a message nobody sent");
        return;
    }
    int slot = c->ring_head;
    c->ring_head = (c->ring_head + 1) % opt.inflight;
    c->ring_n--;
    if (c->msg_op != (opt.text ? 1 : 2)) {
        st.verify_errors++;
        note_error("echo came back with opcode %d", c->msg_op);
    } else if (c->msg_got != opt.size) {
        st.verify_errors++;
        note_error("echo of %zu bytes came back with %llu", opt.size,
                   (unsigned long long)c->msg_got);
    }
    st.msgs_all++;
    if (phase == MEASURE) {
        st.msgs++;
        hist_add(now - c->ring_t[slot]);
    }
    if (sending && c->state == OPEN) send_message(c);
    else if (phase >= DRAIN && c->ring_n == 0 && c->state == OPEN) send_close(c);
}

/* The server's close frame: answer it unless we started the close. */
static void on_close_frame(struct conn *c)
{
    c->got_close = 1;
    if (c->state == CLOSING) return;  /* our close was answered: now wait for TCP to end */
    if (opt.mode == HOLD) {
        st.dropped++;
        note_error("the server closed an idle connection");
    } else {
        st.protocol_errors++;
        note_error("the server closed the connection (close frame)");
    }
    if (c->state == OPEN) {
        enqueue(c, close_frame, sizeof close_frame);
        c->close_deadline = now + CLOSE_TIMEOUT;
    }
    if (c->state != CLOSING) closing++;
    c->state = CLOSED_BY_PEER;
}

static void protocol_error(struct conn *c, const char *why)
{
    st.protocol_errors++;
    note_error("protocol error: %s", why);
    conn_release(c, 1);
}

/* Parse server frames as they arrive (RFC 6455 section 5.2). Returns -1 if c was released. */
static int parse(struct conn *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (!c->in_payload) {
            if (c->hdr_have < 2) c->hdr_need = 2;
            while (c->hdr_have < c->hdr_need && n > 0) {
                c->hdr[c->hdr_have++] = *p++;
                n--;
                if (c->hdr_have == 2) {
                    if (c->hdr[1] & 0x80) {  /* 5.1: a server MUST NOT mask */
                        protocol_error(c, "masked server frame");
                        return -1;
                    }
                    uint8_t l7 = c->hdr[1] & 0x7f;
                    c->hdr_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
                }
            }
            if (c->hdr_have < c->hdr_need) return 0;
            uint8_t b0 = c->hdr[0], l7 = c->hdr[1] & 0x7f;
            uint64_t len = l7;
            if (l7 == 126) len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
            if (l7 == 127) {
                len = 0;
                for (int i = 0; i < 8; i++) len = len << 8 | c->hdr[2 + i];
            }
            c->hdr_have = 0;
            c->fin = b0 >> 7;
            c->op = b0 & 0x0f;
            if (b0 & 0x70) { protocol_error(c, "RSV bit set"); return -1; }
            if (c->op >= 8) {  /* 5.5: control frames are short and not fragmented */
                if (c->op > 10) { protocol_error(c, "unknown control opcode"); return -1; }
                if (!c->fin || len > 125) { protocol_error(c, "bad control frame"); return -1; }
                c->ctl_have = 0;
            } else if (c->op == 0) {  /* 5.4: continuation of the current message */
                if (!c->msg_op) { protocol_error(c, "continuation of nothing"); return -1; }
            } else if (c->op == 1 || c->op == 2) {
                if (c->msg_op) { protocol_error(c, "new message inside a message"); return -1; }
                c->msg_op = c->op;
                c->msg_got = 0;
            } else {
                protocol_error(c, "unknown data opcode");
                return -1;
            }
            c->frame_left = len;
            c->in_payload = 1;
        }
        size_t k = c->frame_left < n ? (size_t)c->frame_left : n;
        if (c->op >= 8) {
            memcpy(c->ctl + c->ctl_have, p, k);
            c->ctl_have += (uint8_t)k;
        } else {
            if (c->msg_got + k > opt.size) {
                st.verify_errors++;
                note_error("echo longer than the %zu bytes sent", opt.size);
                conn_release(c, 1);
                return -1;
            }
            if (opt.verify && c->ring_n > 0 &&
                memcmp(p, payload[c->ring_v[c->ring_head]] + c->msg_got, k) != 0) {
                st.verify_errors++;
                note_error("echoed bytes differ from those sent");
                conn_release(c, 1);
                return -1;
            }
            c->msg_got += k;
        }
        p += k;
        n -= k;
        c->frame_left -= k;
        if (c->frame_left > 0) return 0;
        c->in_payload = 0;
        if (c->op == 9) {  /* 5.5.2: answer a ping with a pong of the same data, masked */
            if (!c->pong_queued && c->state == OPEN) {
                uint8_t key[4] = {(uint8_t)rng(), (uint8_t)rng(), (uint8_t)rng(), (uint8_t)rng()};
                size_t h = build_header(c->pong, 10, c->ctl_have, key);
                for (int i = 0; i < c->ctl_have; i++) c->pong[h + i] = c->ctl[i] ^ key[i & 3];
                enqueue(c, c->pong, h + c->ctl_have);
                c->pong_queued = 1;
            }
        } else if (c->op == 8) {
            on_close_frame(c);
        } else if (c->op < 8 && c->fin) {
            on_message(c);
            c->msg_op = 0;
        }
    }
    return 0;
}

static void send_request(struct conn *c)
{
    uint8_t raw[16];
    char key[25], req[512];
    random_bytes(raw, sizeof raw);
    base64(raw, sizeof raw, key);
    accept_for(key, c->accept);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     opt.path, opt.host, opt.port, key);
    ssize_t w = write(c->fd, req, (size_t)n);
    if (w != n) {  /* a fresh socket takes 200 bytes at once */
        conn_fail(c, w < 0 ? "write of the handshake failed" : "short handshake write");
        return;
    }
    c->state = HANDSHAKE;
    c->hs = malloc(HS_MAX + 1);
    if (!c->hs) { perror("malloc"); exit(1); }
    c->want_out = 0;
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
}

/* Bytes of the handshake response; frames may follow them in the same read. */
static void on_handshake_bytes(struct conn *c, const uint8_t *p, size_t n)
{
    size_t room = HS_MAX - (size_t)c->hs_len;
    size_t take = n < room ? n : room;
    memcpy(c->hs + c->hs_len, p, take);
    int old = c->hs_len;
    c->hs_len += (int)take;
    c->hs[c->hs_len] = 0;
    char *end = strstr(c->hs, "\r\n\r\n");
    if (!end) {
        if (c->hs_len == HS_MAX) conn_fail(c, "handshake: response too long");
        return;
    }
    int head_len = (int)(end - c->hs) + 4;
    end[2] = 0;  /* keep the last header's CRLF for header() */
    const char *why = check_response(c->hs, c->accept);
    if (why) { conn_fail(c, why); return; }
    free(c->hs);
    c->hs = NULL;
    c->state = OPEN;
    size_t used = (size_t)(head_len - old);  /* of this read's bytes */
    on_open(c);
    if (c->state != FREE && n > used) parse(c, p + used, n - used);
}

/* The server closed TCP (read returned 0) or the socket failed. */
static void on_eof(struct conn *c, int error)
{
    if (c->got_close && !error) {
        st.clean++;
        if (opt.mode == CONNECT && phase == MEASURE) st.cycles++;
    } else {
        if (opt.mode == HOLD && c->state == OPEN) st.dropped++;
        st.unclean++;
        note_error("connection ended without a closing handshake%s", error ? " (error)" : "");
    }
    conn_release(c, error);
}

static void on_event(struct conn *c, uint32_t events)
{
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            char why[96];
            snprintf(why, sizeof why, "connect: %s", strerror(err ? err : ECONNRESET));
            conn_fail(c, why);
            return;
        }
        send_request(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        ssize_t n = read(c->fd, rbuf, RBUF);
        if (n == 0) { on_eof(c, 0); return; }
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) { on_eof(c, 1); return; }
        } else if (c->state == HANDSHAKE) {
            on_handshake_bytes(c, rbuf, (size_t)n);
        } else if (parse(c, rbuf, (size_t)n) < 0) {
            return;
        }
        if (c->state == FREE) return;
    }
    if (c->state >= OPEN && flush(c) < 0) on_eof(c, 1);
}

/* ---- the modes -------------------------------------------------------------------------- */

/* Start closing handshakes, from connection `*next` on, while fewer than `limit` are in
 * progress (so that a slow server is not handed 10,000 at once). */
static void close_some(int *next, int limit)
{
    for (; *next < nconns && closing < limit; ++*next) {
        struct conn *c = &conns[*next];
        if (c->state == OPEN) {
            send_close(c);
            if (flush(c) < 0) on_eof(c, 1);
        }
    }
}

static void close_all(void)
{
    int next = 0;
    close_some(&next, INT_MAX);
}

/* Connections whose closing handshake takes too long, or that never opened, are reset. */
static void reap(void)
{
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->state == FREE) continue;
        int late = (c->state == CONNECTING || c->state == HANDSHAKE)
                       ? now > c->started + CONNECT_TIMEOUT
                       : (c->state == CLOSING || c->state == CLOSED_BY_PEER) &&
                             now > c->close_deadline;
        if (!late) continue;
        if (c->state == CONNECTING || c->state == HANDSHAKE) {
            conn_fail(c, "connect/handshake timed out");
        } else {
            st.forced++;
            note_error("closing handshake timed out");
            conn_release(c, 1);
        }
    }
}

static struct snapshot snap0, snap1;
static double t_ready;
static volatile sig_atomic_t interrupted;

static void on_signal(int sig) { (void)sig; interrupted = 1; }

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "{\"error\": \"hard deadline (alarm)\"}\n";
    ssize_t w = write(1, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

static void print_result(int deadline_hit);

static void run(void)
{
    double t0 = now = mono();
    double hard = t0 + opt.timeout;
    double next_reap = t0 + 0.1;
    int want = opt.mode == HOLD ? opt.count : opt.conns;
    nconns = want;
    conns = calloc((size_t)nconns, sizeof *conns);
    int cap = (opt.mode == ECHO ? opt.inflight : 1) + 3;
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conns[i].ring_v = calloc((size_t)cap, 1);
        conns[i].ring_t = calloc((size_t)cap, sizeof(double));
        conns[i].q = calloc((size_t)cap, sizeof(struct iovec));
        conns[i].q_cap = cap;
        if (!conns[i].ring_v || !conns[i].ring_t || !conns[i].q) { perror("calloc"); exit(1); }
    }
    /* Echo opens every connection at once; hold keeps -c handshakes in flight; connect
     * keeps -c slots busy with cycles (those of the -w warm-up are not counted). */
    if (opt.mode == ECHO) {
        for (int i = 0; i < want; i++) { conn_start(&conns[i]); started_total++; }
        phase = OPENING;
    } else if (opt.mode == CONNECT) {
        phase = WARMUP;
    } else {
        phase = OPENING;
    }
    double phase_end = 0;
    int deadline_hit = 0, close_next = 0;
    struct epoll_event evs[512];
    while (phase != DONE) {
        int n = epoll_wait(ep, evs, 512, 20);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); exit(1); }
        now = mono();
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[evs[i].data.u32];
            if (c->state != FREE) on_event(c, evs[i].events);
        }
        if (now >= next_reap) { reap(); next_reap = now + 0.1; }
        if (interrupted || now >= hard) {
            deadline_hit = 1;
            note_error(interrupted ? "interrupted" : "hard deadline reached");
            break;
        }
        switch (opt.mode) {
        case ECHO:
            if (phase == OPENING && handshaking == 0) {
                if (live < want) { phase = DONE; break; }
                phase = WARMUP;
                phase_end = now + opt.warmup;
                sending = 1;
                for (int i = 0; i < nconns; i++) {
                    for (int k = 0; k < opt.inflight; k++) send_message(&conns[i]);
                    if (flush(&conns[i]) < 0) on_eof(&conns[i], 1);
                }
            } else if (phase == WARMUP && now >= phase_end) {
                phase = MEASURE;
                take_snapshot(&snap0);
                hist_reset();
                st.msgs = 0;
                phase_end = now + opt.secs;
            } else if (phase == MEASURE && now >= phase_end) {
                take_snapshot(&snap1);
                phase = DRAIN;
                sending = 0;
                for (int i = 0; i < nconns; i++) {
                    struct conn *c = &conns[i];
                    if (c->state == OPEN && c->ring_n == 0) {
                        send_close(c);
                        if (flush(c) < 0) on_eof(c, 1);
                    }
                }
                phase_end = now + 10.0;  /* echoes still in flight get this long */
            } else if (phase == DRAIN && live == 0) {
                phase = DONE;
            } else if (phase == DRAIN && now >= phase_end) {
                close_all();
                phase_end = now + CLOSE_TIMEOUT + 1;
            }
            break;
        case CONNECT:
            if (phase == WARMUP && now >= t0 + opt.warmup) {
                phase = MEASURE;
                hist_reset();
                take_snapshot(&snap0);
            }
            if (phase == MEASURE && now >= snap0.t + opt.secs) {
                take_snapshot(&snap1);
                phase = DRAIN;
            }
            if (phase == WARMUP || phase == MEASURE) {  /* a new cycle in every free slot */
                for (int i = 0; i < nconns; i++)
                    if (conns[i].state == FREE) { conn_start(&conns[i]); started_total++; }
            }
            if (phase == DRAIN && live == 0) phase = DONE;
            break;
        case HOLD:
            while (phase == OPENING && handshaking < opt.conns && started_total < want)
                conn_start(&conns[started_total++]);
            if (phase == OPENING && started_total == want && handshaking == 0) {
                t_ready = now;
                printf("READY {\"open\": %d, \"failed\": %lld, \"secs\": %.3f}\n", live,
                       (long long)want - live, now - t0);
                fflush(stdout);
                phase = MEASURE;
                phase_end = now + opt.secs;
            } else if (phase == MEASURE && now >= phase_end) {
                take_snapshot(&snap1);
                phase = DRAIN;
            }
            if (phase == DRAIN) {
                close_some(&close_next, opt.conns);
                if (live == 0) phase = DONE;
            }
            break;
        case SELFTEST:
            phase = DONE;
        }
    }
    for (int i = 0; i < nconns; i++) {  /* out of time or given up: reset what is left */
        if (conns[i].state != FREE) {
            st.forced++;
            conn_release(&conns[i], 1);
        }
    }
    if (opt.mode != HOLD && snap1.t == 0) take_snapshot(&snap1);
    if (snap0.t == 0) snap0 = snap1;  /* never measured: an empty window, not a bogus one */
    print_result(deadline_hit);
}

static void print_window(void)
{
    double secs = snap1.t - snap0.t;
    long hz = sysconf(_SC_CLK_TCK);
    printf(", \"window_s\": %.4f", secs);
    printf(", \"client_cpu_s\": %.4f, \"client_user_s\": %.4f",
           (snap1.self_user + snap1.self_sys) - (snap0.self_user + snap0.self_sys),
           snap1.self_user - snap0.self_user);
    if (opt.server_pid > 0 && snap0.srv_user >= 0 && snap1.srv_user >= 0)
        printf(", \"server_user_s\": %.4f, \"server_sys_s\": %.4f",
               (double)(snap1.srv_user - snap0.srv_user) / hz,
               (double)(snap1.srv_sys - snap0.srv_sys) / hz);
    printf(", \"core_busy_pct\": [");
    for (int i = 0; i < snap1.cores.n && i < snap0.cores.n; i++) {
        long long busy = snap1.cores.busy[i] - snap0.cores.busy[i];
        long long total = snap1.cores.total[i] - snap0.cores.total[i];
        printf("%s%.1f", i ? ", " : "", total > 0 ? 100.0 * busy / total : 0.0);
    }
    printf("]");
}

static void print_result(int deadline_hit)
{
    static const char *names[] = {"echo", "connect", "hold", "selftest"};
    printf("{\"mode\": \"%s\", \"conns\": %d", names[opt.mode], opt.conns);
    if (opt.mode == ECHO) {
        double secs = snap1.t - snap0.t;
        printf(", \"inflight\": %d, \"size\": %zu, \"text\": %s, \"msgs\": %lld, "
               "\"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, \"lat_p50_us\": %.0f, "
               "\"lat_p99_us\": %.0f, \"lat_max_us\": %.0f, \"msgs_total\": %lld",
               opt.inflight, opt.size, opt.text ? "true" : "false", st.msgs,
               secs > 0 ? st.msgs / secs : 0.0,
               secs > 0 ? st.msgs * (double)opt.size / secs / 1e6 : 0.0, hist_pct(0.5),
               hist_pct(0.99), lat_max * 1e6, st.msgs_all);
        print_window();
    } else if (opt.mode == CONNECT) {
        double secs = snap1.t - snap0.t;
        printf(", \"handshakes\": %lld, \"handshakes_per_s\": %.1f, \"hs_p50_us\": %.0f, "
               "\"hs_p99_us\": %.0f, \"started\": %lld",
               st.cycles, secs > 0 ? st.cycles / secs : 0.0, hist_pct(0.5), hist_pct(0.99),
               started_total);
        print_window();
    } else if (opt.mode == HOLD) {
        printf(", \"n\": %d, \"held_s\": %.3f", opt.count, snap1.t > 0 ? snap1.t - t_ready : 0.0);
    }
    printf(", \"opened\": %lld, \"failed\": %lld, \"dropped\": %lld, \"closed_clean\": %lld, "
           "\"closed_unclean\": %lld, \"closed_forced\": %lld, \"protocol_errors\": %lld, "
           "\"verify_errors\": %lld, \"verify\": %s, \"deadline_hit\": %s",
           st.opened, st.failed, st.dropped, st.clean, st.unclean, st.forced,
           st.protocol_errors, st.verify_errors, opt.verify ? "true" : "false",
           deadline_hit ? "true" : "false");
    if (st.first_error[0]) {
        printf(", \"first_error\": \"");
        for (const char *s = st.first_error; *s; s++)
            putchar(*s == '"' || *s == '\\' ? '\'' : *s);
        printf("\"");
    }
    printf("}\n");
    fflush(stdout);
}

/* ---- self-test and main ----------------------------------------------------------------- */

static int selftest(void)
{
    uint8_t d[20];
    char hex[41], acc[29];
    sha1("abc", 3, d);
    for (int i = 0; i < 20; i++) sprintf(hex + 2 * i, "%02x", d[i]);
    int ok = strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0;
    /* 56 bytes: the padding spills into a second block */
    sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d);
    for (int i = 0; i < 20; i++) sprintf(hex + 2 * i, "%02x", d[i]);
    ok &= strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1") == 0;
    accept_for("dGhlIHNhbXBsZSBub25jZQ==", acc);  /* RFC 6455 section 1.3 */
    ok &= strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0;
    hist_reset();
    for (int i = 1; i <= 100; i++) hist_add(i * 1e-6);
    int hist_ok = hist_pct(0.5) == 51 && hist_pct(0.99) == 100;
    printf("{\"mode\": \"selftest\", \"ok\": %s, \"sha1\": %s, \"histogram\": %s}\n",
           ok && hist_ok ? "true" : "false", ok ? "true" : "false", hist_ok ? "true" : "false");
    ok &= hist_ok;
    return ok ? 0 : 1;
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'k' || *end == 'K') v *= 1024;
    else if (*end == 'm' || *end == 'M') v *= 1024 * 1024;
    return (size_t)v;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: loadgen MODE [options]\n"
        "  echo      -c CONNS -P INFLIGHT -s SIZE -d SECS -w WARMUP   msgs/s, MB/s, latency\n"
        "  connect   -c CONCURRENCY -d SECS [-w WARMUP]               handshakes/s\n"
        "  hold      -n N -c CONCURRENCY -d SECS                      prints READY, holds\n"
        "  selftest                                                   SHA-1, accept key\n"
        "options: -H HOST (127.0.0.1)  -p PORT  -u PATH (/)  -s SIZE (64; k/m suffixes)\n"
        "  -S PID  report this server process's CPU time over the measured window\n"
        "  -t SECS hard deadline (default: warm-up + duration + 30, hold + 90)\n"
        "  --text  text frames instead of binary   --no-verify  skip comparing echoes\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return 2; }
    const char *m = argv[1];
    if (!strcmp(m, "echo")) opt.mode = ECHO;
    else if (!strcmp(m, "connect")) opt.mode = CONNECT;
    else if (!strcmp(m, "hold")) opt.mode = HOLD;
    else if (!strcmp(m, "selftest")) return selftest();
    else if (!strcmp(m, "-h") || !strcmp(m, "--help")) { usage(stdout); return 0; }
    else { usage(stderr); return 2; }
    if (opt.mode != ECHO) opt.warmup = 0;
    static const struct option longs[] = {
        {"text", no_argument, NULL, 'T'}, {"no-verify", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "c:P:s:d:w:n:H:p:u:t:S:h", longs, NULL)) != -1) {
        switch (ch) {
        case 'c': opt.conns = atoi(optarg); break;
        case 'P': opt.inflight = atoi(optarg); break;
        case 's': opt.size = parse_size(optarg); break;
        case 'd': opt.secs = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'n': opt.count = atoi(optarg); break;
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'u': opt.path = optarg; break;
        case 't': opt.timeout = atof(optarg); break;
        case 'S': opt.server_pid = atoi(optarg); break;
        case 'T': opt.text = 1; break;
        case 'V': opt.verify = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.conns < 1 || opt.inflight < 1 ||
        opt.inflight > 65536 || opt.count < 1 || opt.secs < 0 || opt.warmup < 0 ||
        opt.size > ((size_t)1 << 31)) {
        fprintf(stderr, "loadgen: bad or missing option (-p PORT is required)\n");
        return 2;
    }
    if (opt.timeout < 0) opt.timeout = opt.warmup + opt.secs + (opt.mode == HOLD ? 90 : 30);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: -H takes an IPv4 address\n");
        return 2;
    }
    /* As many sockets as the hard limit allows (hold mode needs one per connection). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)opt.timeout + 5);  /* in case the loop itself is stuck */
    random_bytes(&rng_state, sizeof rng_state);
    rng_state |= 1;
    if (opt.mode == ECHO) build_frames();
    else {
        opt.size = 0;
        build_frames();
    }
    rbuf = malloc(RBUF);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!rbuf || ep < 0) { perror("setup"); return 1; }
    run();
    int bad = st.failed || st.protocol_errors || st.verify_errors || st.unclean;
    if (opt.mode == ECHO) bad |= st.msgs == 0;
    if (opt.mode == CONNECT) bad |= st.cycles == 0;
    if (opt.mode == HOLD) bad |= st.opened < opt.count || st.dropped;
    return bad ? 1 : 0;
}

#endif /* LOADGEN_HELPERS_ONLY */
#endif /* LOADGEN_CRYPTO_ONLY */
