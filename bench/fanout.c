/*
 * fanout: the load generator of bench/fanout.py. One thread, epoll, non-blocking sockets with
 * TCP_NODELAY; 127.0.0.1 by default; no dependencies beyond libc and Linux.
 *
 *     gcc -O2 -Wall -o bench/build/fanout bench/fanout.c
 *     fanout -p PORT[,PORT...] -n SUBSCRIBERS -s SIZE -m MESSAGES -P INFLIGHT -d SECS -w WARMUP
 *            [-u PATH] [-c CONCURRENCY] [-S PID[,PID...]] [-T MSG_TIMEOUT] [-t SECS]
 *
 * It measures a broadcast endpoint: a server where every message a client sends goes to every
 * client connected to that path (the sender included). It opens N subscribers, spread round
 * robin over the ports given (one port per server process), and one more connection, the
 * publisher, on the first port. Then, in phases:
 *
 *   probe      the publisher sends probe messages, one at a time, until one probe has reached
 *              all N subscribers: from then on every subscription is in place. (A server may
 *              subscribe a connection a little after its handshake, and a second process
 *              behind Redis a little later still.) Probes are never measured.
 *   latency    -m messages, one at a time: each is sent when the previous one has reached every
 *              subscriber. Per message: the time from just before the publisher's write until
 *              the last subscriber has read it whole (latency to all), and until the first has.
 *   throughput -P messages in flight: a new one is sent whenever one has reached everybody.
 *              After -w s of warm-up, -d s are measured: messages delivered to subscribers per
 *              second (each subscriber's copy counts one), messages completed per second, and
 *              the server processes' CPU time (-S: /proc/PID/stat at the window's edges).
 *   close      every connection closes politely (close frame, the server's close frame, the
 *              server ends TCP first; RFC 6455 section 7.1.1), a bounded number at a time.
 *
 * Each message is a binary frame of -s bytes (16 at least): its sequence number and a check
 * word, then filler. Every subscriber checks each copy: binary, the right length, a number
 * that was sent, numbers in increasing order (no duplicate, no reordering). A message that
 * has not reached everybody after -T s is given up: its missing copies count as lost.
 *
 * The cost to this side is one epoll event and one read per copy when one message is in
 * flight (several copies per read when more are), timed with CLOCK_MONOTONIC only at a
 * message's first and last copy. Its own CPU and each core's busy time are reported for both
 * measured phases, so a run where this program was the limit can be seen as such.
 *
 * The result is ONE line of JSON on stdout. Exit status: 0 when every connection opened, the
 * probes converged, no copy was lost, and no protocol or check error was seen; 1 otherwise;
 * 2 on bad usage; 3 when the hard deadline (-t) fired. The handshake (SHA-1, base64, the
 * response check), the frame header and the /proc readers come from bench/loadgen.c.
 */
#define LOADGEN_HELPERS_ONLY  /* SHA-1, base64, /proc readers, frame header, 101 check */
#include "loadgen.c"

#define MAX_PORTS 16
#define MAX_PIDS 16
#define RING 16384            /* messages tracked at once (in flight + recent) */
#define RBUF (256 * 1024)     /* the shared read buffer */
#define CONNECT_TIMEOUT 15.0  /* seconds for TCP connect + opening handshake */
#define CLOSE_TIMEOUT 5.0     /* seconds for the closing handshake before a reset */
#define PROBE_QUIET 0.1       /* a probe no copy of which arrived for this long is over */
#define PROBE_LIMIT 30.0      /* seconds the probes may take to reach everybody */
#define HS_MAX 4096           /* largest handshake response accepted */
#define MAGIC 0x74756f6e6166ULL  /* the check word is seq ^ MAGIC */

static struct {
    const char *host, *path;
    int ports[MAX_PORTS], nports, pids[MAX_PIDS], npids;
    int subs, msgs, inflight, concurrency, close_concurrency;
    size_t size;
    double secs, warmup, timeout, msg_timeout;
} opt = {.host = "127.0.0.1", .path = "/broadcast", .subs = 100, .msgs = 50, .inflight = 8,
         .concurrency = 100, .close_concurrency = 500, .size = 64, .secs = 2.0, .warmup = 0.5,
         .timeout = -1, .msg_timeout = 5.0};

/* ---- accounting ------------------------------------------------------------------------- */

static double now;  /* refreshed once per loop iteration; messages' times are taken exactly */

/* What a measured phase is compared across: taken at its start and at its end. */
struct snapshot {
    double t;
    long long srv_user[MAX_PIDS], srv_sys[MAX_PIDS];
    double self_user, self_sys;
    struct cores cores;
};

static void take_snapshot(struct snapshot *s)
{
    s->t = mono();
    for (int i = 0; i < opt.npids; i++) proc_ticks(opt.pids[i], &s->srv_user[i], &s->srv_sys[i]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->self_user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6;
    s->self_sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    read_cores(&s->cores);
}

/* ---- messages --------------------------------------------------------------------------- */

enum phase { OPENING, PROBING, LATENCY_RUN, THR_WARMUP, THR_MEASURE, THR_DRAIN, CLOSING_ALL,
             DONE };
static enum phase phase;


enum kind { PROBE, LATENCY, THROUGHPUT };

struct msg {
    uint64_t seq;        /* 0: the slot is unused */
    uint8_t kind, over;  /* over: reached everybody, or given up */
    int count;           /* subscribers that have it */
    double sent, first, last, last_copy;
};

static struct msg ring[RING];
static uint64_t next_seq = 1;
static int open_msgs;        /* latency and throughput messages not over yet */
static uint64_t oldest_open = 1;

static double *lat_all, *lat_first;  /* latency phase, seconds per message */
static int lat_n, lat_sent;
static double *thr_all;              /* throughput window: latency to all under load */
static int thr_n, thr_cap;

static struct {
    long long opened, failed, clean, unclean, forced, dropped;
    long long copies, copies_window, completed_window, sent_window, publisher_copies;
    long long lost, late, probes, protocol_errors, check_errors, order_errors;
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

/* ---- connections ------------------------------------------------------------------------ */

enum state { FREE, CONNECTING, HANDSHAKE, OPEN, CLOSING, CLOSED_BY_PEER };

struct conn {
    int fd;
    uint8_t state, want_out, got_close, pong_queued, in_payload, seen;
    uint8_t hdr_have, hdr_need, fin, op, msg_op, ctl_have;
    uint8_t hdr[14], ctl[125], head[16];  /* head: a message's first 16 payload bytes */
    uint16_t port;
    uint64_t frame_left, msg_got, last_seq;
    double started, close_deadline;
    char *hs;  /* the handshake response while it arrives */
    int hs_len;
    char accept[29];
    uint8_t *out;  /* bytes the socket did not take yet */
    size_t out_off, out_len, out_cap;
};

static struct conn *conns;  /* conns[0 .. subs): subscribers; conns[subs]: the publisher */
static struct conn *pub;
static int nconns, ep;
static uint8_t *rbuf;
static int live, handshaking, closing, seen_count;

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

static void conn_release(struct conn *c, int abortive)
{
    if (c->state == CONNECTING || c->state == HANDSHAKE) {
        handshaking--;
        st.failed++;
    }
    if (c->state == CLOSING || c->state == CLOSED_BY_PEER) closing--;
    if (c->state != FREE) live--;
    if (c->fd >= 0) {
        if (abortive) {  /* RST: nothing left in TIME_WAIT */
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(c->fd);
    }
    c->fd = -1;
    c->state = FREE;
    free(c->hs);
    c->hs = NULL;
    free(c->out);
    c->out = NULL;
    c->out_off = c->out_len = c->out_cap = 0;
}

static void conn_fail(struct conn *c, const char *why)
{
    note_error("%s", why);
    conn_release(c, 1);
}

static void conn_start(struct conn *c)
{
    memset(c, 0, sizeof *c);
    c->port = (uint16_t)(c == pub ? opt.ports[0] : opt.ports[(c - conns) % opt.nports]);
    c->started = now;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        st.failed++;
        note_error("socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = CONNECTING;
    live++;
    handshaking++;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(c->port)};
    inet_pton(AF_INET, opt.host, &addr.sin_addr);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        char why[96];
        snprintf(why, sizeof why, "connect: %s", strerror(errno));
        conn_fail(c, why);
        return;
    }
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    c->want_out = 1;
}

/* Write what is queued; returns -1 when the socket failed. */
static int flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return -1;
        }
        c->out_off += (size_t)w;
    }
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        c->pong_queued = 0;
    }
    want_out(c, c->out_len > 0);
    return 0;
}

/* Send bytes now, queueing what the socket does not take at once (the caller flushes). */
static void queue(struct conn *c, const void *p, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 256;
        while (cap < c->out_len + n) cap *= 2;
        uint8_t *grown = realloc(c->out, cap);
        if (!grown) { perror("realloc"); exit(1); }
        c->out = grown;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* Masking keys from xorshift: a benchmark's need not be unpredictable (RFC 6455 section
 * 10.3 is about scripts in browsers choosing what goes on the wire). */
static void random_key(uint8_t key[4])
{
    uint64_t r = rng();
    memcpy(key, &r, 4);
}

static void send_close(struct conn *c)
{
    uint8_t frame[8], key[4];
    random_key(key);
    size_t h = build_header(frame, 8, 2, key);
    frame[h] = (1000 >> 8) ^ key[0];  /* status 1000, masked */
    frame[h + 1] = (1000 & 0xff) ^ key[1];
    queue(c, frame, h + 2);
    if (c->state != CLOSED_BY_PEER) closing++;
    c->state = CLOSING;
    c->close_deadline = now + CLOSE_TIMEOUT;
}

/* ---- publishing ------------------------------------------------------------------------- */

static uint8_t *frame_buf;  /* one message frame at a time: header, masked payload */

/* The publisher sends message `seq` of `kind` (the caller flushes). */
static void publish(int kind)
{
    uint64_t seq = next_seq++;
    struct msg *m = &ring[seq % RING];
    if (m->seq && !m->over && m->kind != PROBE) {  /* the ring is sized far above -P */
        st.lost += opt.subs - m->count;
        open_msgs--;
    }
    *m = (struct msg){.seq = seq, .kind = (uint8_t)kind};
    uint8_t key[4];
    random_key(key);
    size_t h = build_header(frame_buf, 2, opt.size, key);
    uint8_t *p = frame_buf + h;
    uint64_t check = seq ^ MAGIC;
    memcpy(p, &seq, 8);  /* little-endian on the machines this runs on; only we read it */
    memcpy(p + 8, &check, 8);
    for (size_t i = 16; i < opt.size; i++) p[i] = (uint8_t)(seq + i);
    for (size_t i = 0; i < opt.size; i++) p[i] ^= key[i & 3];
    if (kind == PROBE) st.probes++;
    else open_msgs++;
    if (phase == THR_MEASURE) st.sent_window++;
    m->sent = m->last_copy = mono();
    queue(pub, frame_buf, h + opt.size);
    if (flush(pub) < 0) note_error("the publisher's socket failed");
}

/* ---- phases ----------------------------------------------------------------------------- */

static int sending;  /* throughput: a completed message is replaced by a new one */
static struct snapshot lat0, lat1, thr0, thr1;
static double t0, t_open, t_probed, t_closing, phase_end;
static uint64_t probe_seq;

static void message_over(struct msg *m)
{
    m->over = 1;
    if (m->kind == PROBE) return;
    open_msgs--;
    if (m->count < opt.subs) {
        st.lost += opt.subs - m->count;
        note_error("message %llu reached %d of %d subscribers in %.1f s",
                   (unsigned long long)m->seq, m->count, opt.subs, opt.msg_timeout);
    }
    if (m->kind == LATENCY) {
        if (m->count == opt.subs) {
            lat_all[lat_n] = m->last - m->sent;
            lat_first[lat_n] = m->first - m->sent;
            lat_n++;
        }
        if (phase == LATENCY_RUN && lat_sent < opt.msgs) {
            lat_sent++;
            publish(LATENCY);
        }
    } else {
        if (phase == THR_MEASURE && m->count == opt.subs) {
            st.completed_window++;
            if (thr_n < thr_cap) thr_all[thr_n++] = m->last - m->sent;
        }
        if (sending) publish(THROUGHPUT);
    }
}

/* A whole message arrived on subscriber (or publisher) c. */
static void on_message(struct conn *c)
{
    if (c->msg_op != 2 || c->msg_got != opt.size) {
        st.check_errors++;
        note_error("a copy came as opcode %d with %llu bytes (sent: binary, %zu)", c->msg_op,
                   (unsigned long long)c->msg_got, opt.size);
        return;
    }
    uint64_t seq, check;
    memcpy(&seq, c->head, 8);
    memcpy(&check, c->head + 8, 8);
    if ((check ^ MAGIC) != seq || seq == 0 || seq >= next_seq) {
        st.check_errors++;
        note_error("a copy of a message that was not sent");
        return;
    }
    if (seq <= c->last_seq) {
        st.order_errors++;
        note_error("message %llu came after %llu (duplicate or reordered)",
                   (unsigned long long)seq, (unsigned long long)c->last_seq);
        return;
    }
    c->last_seq = seq;
    if (c == pub) {  /* the servers send the sender its own message too; not counted */
        st.publisher_copies++;
        return;
    }
    if (!c->seen) { c->seen = 1; seen_count++; }
    struct msg *m = &ring[seq % RING];
    if (m->seq != seq || (m->over && m->kind != PROBE)) {
        st.late++;  /* after it was given up */
        return;
    }
    st.copies++;
    if (phase == THR_MEASURE) st.copies_window++;
    m->last_copy = now;
    if (m->count++ == 0) m->first = mono();
    if (m->count == opt.subs) {
        m->last = mono();
        message_over(m);
    }
}

static void on_close_frame(struct conn *c)
{
    c->got_close = 1;
    if (c->state == CLOSING) return;  /* the answer to ours: wait for the server's FIN */
    st.dropped++;
    note_error("the server closed a connection (close frame)");
    uint8_t frame[8], key[4];
    random_key(key);
    size_t h = build_header(frame, 8, 0, key);
    queue(c, frame, h);
    c->close_deadline = now + CLOSE_TIMEOUT;
    closing++;
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
                    if (c->hdr[1] & 0x80) { protocol_error(c, "masked server frame"); return -1; }
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
                if (c->op > 10 || !c->fin || len > 125) {
                    protocol_error(c, "bad control frame");
                    return -1;
                }
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
            if (c->msg_got < sizeof c->head) {
                size_t h = sizeof c->head - (size_t)c->msg_got;
                memcpy(c->head + c->msg_got, p, k < h ? k : h);
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
                uint8_t pong[131], key[4];
                random_key(key);
                size_t h = build_header(pong, 10, c->ctl_have, key);
                for (int i = 0; i < c->ctl_have; i++) pong[h + i] = c->ctl[i] ^ key[i & 3];
                queue(c, pong, h + c->ctl_have);
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

/* ---- the opening handshake (checked by loadgen.c's check_response) -------------------- */

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
                     opt.path, opt.host, c->port, key);
    if (write(c->fd, req, (size_t)n) != n) {  /* a fresh socket takes 200 bytes at once */
        conn_fail(c, "write of the handshake failed");
        return;
    }
    c->state = HANDSHAKE;
    c->hs = malloc(HS_MAX + 1);
    if (!c->hs) { perror("malloc"); exit(1); }
    c->want_out = 0;
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
}

static void on_handshake_bytes(struct conn *c, const uint8_t *p, size_t n)
{
    size_t room = HS_MAX - (size_t)c->hs_len, take = n < room ? n : room;
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
    st.opened++;
    handshaking--;
    size_t used = (size_t)(head_len - old);
    if (n > used) parse(c, p + used, n - used);
}

static void on_eof(struct conn *c, int error)
{
    if (c->got_close && !error) {
        st.clean++;
    } else {
        if (c->state == OPEN) st.dropped++;
        st.unclean++;
        note_error("a connection ended without a closing handshake%s", error ? " (error)" : "");
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
        } else {
            send_request(c);
        }
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
    if (c->state >= OPEN && (c->out_len > 0 || c->want_out) && flush(c) < 0) on_eof(c, 1);
}

/* ---- the run ---------------------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "{\"mode\": \"fanout\", \"error\": \"hard deadline (alarm)\"}\n";
    ssize_t w = write(1, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

/* Handshakes and closing handshakes that take too long end with a reset. */
static void reap(void)
{
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if ((c->state == CONNECTING || c->state == HANDSHAKE) &&
            now > c->started + CONNECT_TIMEOUT) {
            conn_fail(c, "connect/handshake timed out");
        } else if ((c->state == CLOSING || c->state == CLOSED_BY_PEER) &&
                   now > c->close_deadline) {
            st.forced++;
            note_error("closing handshake timed out");
            conn_release(c, 1);
        }
    }
}

/* Give up messages that have not reached everybody in -T s. */
static void expire(void)
{
    for (; oldest_open < next_seq; oldest_open++) {
        struct msg *m = &ring[oldest_open % RING];
        if (m->seq == oldest_open && !m->over && m->kind != PROBE) break;
    }
    for (uint64_t s = oldest_open; s < next_seq; s++) {
        struct msg *m = &ring[s % RING];
        if (m->seq == s && !m->over && m->kind != PROBE && now > m->sent + opt.msg_timeout)
            message_over(m);
    }
}

static void start_closing(int *next)
{
    for (; *next < nconns && closing < opt.close_concurrency; ++*next) {
        struct conn *c = &conns[*next];
        if (c->state == OPEN) {
            send_close(c);
            if (flush(c) < 0) on_eof(c, 1);
        }
    }
}

/* Move through the phases; called after every batch of events. */
static void step(int *close_next)
{
    switch (phase) {
    case OPENING: {
        static int started;
        while (started < nconns && handshaking < opt.concurrency) conn_start(&conns[started++]);
        if (started < nconns || handshaking > 0) break;
        t_open = now - t0;
        if (st.opened < nconns) {
            note_error("%lld of %d connections opened", st.opened, nconns);
            phase = CLOSING_ALL;
            break;
        }
        phase = PROBING;
        publish(PROBE);
        probe_seq = next_seq - 1;
        break;
    }
    case PROBING: {
        struct msg *m = &ring[probe_seq % RING];
        if (m->count == opt.subs) {  /* one probe reached everybody: subscribed, all */
            t_probed = now - t0 - t_open;
            phase = LATENCY_RUN;
            take_snapshot(&lat0);
            if (opt.msgs > 0) {
                lat_sent = 1;
                publish(LATENCY);
            }
        } else if (now - t0 - t_open > PROBE_LIMIT) {
            note_error("after %.0f s of probes, %d of %d subscribers had one", PROBE_LIMIT,
                       seen_count, opt.subs);
            phase = CLOSING_ALL;
        } else if (now > m->last_copy + PROBE_QUIET) {
            publish(PROBE);
            probe_seq = next_seq - 1;
        }
        break;
    }
    case LATENCY_RUN:
        if (lat_sent < opt.msgs || open_msgs > 0) break;
        take_snapshot(&lat1);
        phase = THR_WARMUP;
        phase_end = now + opt.warmup;
        sending = 1;
        for (int i = 0; i < opt.inflight; i++) publish(THROUGHPUT);
        break;
    case THR_WARMUP:
        if (now < phase_end) break;
        phase = THR_MEASURE;
        take_snapshot(&thr0);
        phase_end = now + opt.secs;
        break;
    case THR_MEASURE:
        if (now < phase_end) break;
        take_snapshot(&thr1);
        phase = THR_DRAIN;
        sending = 0;
        break;
    case THR_DRAIN:
        if (open_msgs > 0) break;  /* expire() ends the stragglers */
        phase = CLOSING_ALL;
        break;
    case CLOSING_ALL:
        if (!t_closing) t_closing = now;
        start_closing(close_next);
        if (live == 0) phase = DONE;
        break;
    case DONE:
        break;
    }
}

static double pct(double *v, int n, double q)  /* nearest rank, in microseconds */
{
    if (n == 0) return 0;
    int k = (int)(q * n + 0.999999) - 1;
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    return v[k] * 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_window(const char *prefix, const struct snapshot *a, const struct snapshot *b)
{
    long hz = sysconf(_SC_CLK_TCK);
    double secs = a->t && b->t ? b->t - a->t : 0;
    printf(", \"%swindow_s\": %.4f", prefix, secs);
    printf(", \"%sclient_cpu_s\": %.4f, \"%sclient_user_s\": %.4f", prefix,
           a->t ? (b->self_user + b->self_sys) - (a->self_user + a->self_sys) : 0, prefix,
           a->t ? b->self_user - a->self_user : 0);
    double user = 0, sys = 0;
    int known = opt.npids > 0 && a->t && b->t;
    printf(", \"%sserver_cpu\": [", prefix);
    for (int i = 0; i < opt.npids; i++) {
        int ok = a->t && b->t && a->srv_user[i] >= 0 && b->srv_user[i] >= 0;
        double u = ok ? (double)(b->srv_user[i] - a->srv_user[i]) / hz : 0;
        double s = ok ? (double)(b->srv_sys[i] - a->srv_sys[i]) / hz : 0;
        known &= ok;
        user += u;
        sys += s;
        printf("%s{\"pid\": %d, \"user_s\": %.4f, \"sys_s\": %.4f}", i ? ", " : "", opt.pids[i],
               u, s);
    }
    printf("]");
    if (known) printf(", \"%sserver_user_s\": %.4f, \"%sserver_sys_s\": %.4f", prefix, user,
                      prefix, sys);
    printf(", \"%score_busy_pct\": [", prefix);
    for (int i = 0; a->t && b->t && i < b->cores.n && i < a->cores.n; i++) {
        long long busy = b->cores.busy[i] - a->cores.busy[i];
        long long total = b->cores.total[i] - a->cores.total[i];
        printf("%s%.1f", i ? ", " : "", total > 0 ? 100.0 * busy / total : 0.0);
    }
    printf("]");
}

static void print_result(int deadline_hit)
{
    printf("{\"mode\": \"fanout\", \"subscribers\": %d, \"ports\": [", opt.subs);
    for (int i = 0; i < opt.nports; i++) printf("%s%d", i ? ", " : "", opt.ports[i]);
    printf("], \"path\": \"%s\", \"size\": %zu, \"open_s\": %.3f, \"probe_s\": %.3f, "
           "\"probes\": %lld, \"close_s\": %.3f, \"total_s\": %.3f", opt.path, opt.size, t_open,
           t_probed, st.probes, t_closing ? mono() - t_closing : 0.0, mono() - t0);
    qsort(lat_all, (size_t)lat_n, sizeof *lat_all, cmp_double);
    qsort(lat_first, (size_t)lat_n, sizeof *lat_first, cmp_double);
    printf(", \"lat_msgs\": %d, \"lat_complete\": %d, \"all_p50_us\": %.0f, \"all_p99_us\": %.0f, "
           "\"all_max_us\": %.0f, \"first_p50_us\": %.0f, \"first_p99_us\": %.0f", opt.msgs,
           lat_n, pct(lat_all, lat_n, 0.5), pct(lat_all, lat_n, 0.99), pct(lat_all, lat_n, 1.0),
           pct(lat_first, lat_n, 0.5), pct(lat_first, lat_n, 0.99));
    print_window("lat_", &lat0, &lat1);
    double secs = thr0.t && thr1.t ? thr1.t - thr0.t : 0;
    qsort(thr_all, (size_t)thr_n, sizeof *thr_all, cmp_double);
    printf(", \"inflight\": %d, \"sent\": %lld, \"completed\": %lld, \"deliveries\": %lld, "
           "\"deliveries_per_s\": %.1f, \"msgs_per_s\": %.1f, \"thr_all_p50_us\": %.0f, "
           "\"thr_all_p99_us\": %.0f",
           opt.inflight, st.sent_window, st.completed_window, st.copies_window,
           secs > 0 ? st.copies_window / secs : 0.0,
           secs > 0 ? st.completed_window / secs : 0.0, pct(thr_all, thr_n, 0.5),
           pct(thr_all, thr_n, 0.99));
    print_window("", &thr0, &thr1);
    printf(", \"copies\": %lld, \"publisher_copies\": %lld, \"lost\": %lld, \"late\": %lld, "
           "\"opened\": %lld, \"failed\": %lld, \"dropped\": %lld, \"closed_clean\": %lld, "
           "\"closed_unclean\": %lld, \"closed_forced\": %lld, \"protocol_errors\": %lld, "
           "\"check_errors\": %lld, \"order_errors\": %lld, \"deadline_hit\": %s",
           st.copies, st.publisher_copies, st.lost, st.late, st.opened, st.failed, st.dropped,
           st.clean, st.unclean, st.forced, st.protocol_errors, st.check_errors,
           st.order_errors, deadline_hit ? "true" : "false");
    if (st.first_error[0]) {
        printf(", \"first_error\": \"");
        for (const char *s = st.first_error; *s; s++)
            putchar(*s == '"' || *s == '\\' ? '\'' : *s);
        printf("\"");
    }
    printf("}\n");
    fflush(stdout);
}

static int run(void)
{
    t0 = now = mono();
    double hard = t0 + opt.timeout, next_reap = t0 + 0.1;
    nconns = opt.subs + 1;
    conns = calloc((size_t)nconns, sizeof *conns);
    thr_cap = 1 << 18;
    lat_all = calloc((size_t)opt.msgs + 1, sizeof(double));
    lat_first = calloc((size_t)opt.msgs + 1, sizeof(double));
    thr_all = calloc((size_t)thr_cap, sizeof(double));
    frame_buf = malloc(opt.size + 14);
    rbuf = malloc(RBUF);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || !lat_all || !lat_first || !thr_all || !frame_buf || !rbuf || ep < 0) {
        perror("setup");
        exit(1);
    }
    for (int i = 0; i < nconns; i++) conns[i].fd = -1;
    pub = &conns[opt.subs];
    int deadline_hit = 0, close_next = 0;
    struct epoll_event evs[1024];
    phase = OPENING;
    step(&close_next);
    while (phase != DONE) {
        int n = epoll_wait(ep, evs, 1024, 10);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); exit(1); }
        now = mono();
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[evs[i].data.u32];
            if (c->state != FREE) on_event(c, evs[i].events);
        }
        if (now >= next_reap) {
            reap();
            expire();
            next_reap = now + 0.05;
        }
        if (interrupted || now >= hard) {
            deadline_hit = 1;
            note_error(interrupted ? "interrupted" : "hard deadline reached");
            break;
        }
        if (pub->state != OPEN && phase > OPENING && phase < CLOSING_ALL) {
            note_error("the publisher's connection ended");
            phase = CLOSING_ALL;
        }
        step(&close_next);
    }
    for (int i = 0; i < nconns; i++) {  /* out of time or given up: reset what is left */
        if (conns[i].state != FREE) {
            st.forced++;
            conn_release(&conns[i], 1);
        }
    }
    print_result(deadline_hit);
    int bad = st.opened < nconns || st.failed || st.protocol_errors || st.check_errors ||
              st.order_errors || st.lost || st.unclean || st.dropped || lat_n < opt.msgs ||
              !thr1.t;
    return deadline_hit ? 3 : bad ? 1 : 0;
}

/* "9001,9002" into an array; the count, or -1 if malformed. */
static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > INT_MAX || n == max) return -1;
        out[n++] = (int)v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return n;
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
        "usage: fanout -p PORT[,PORT...] [options]   (see the comment at the top of fanout.c)\n"
        "  -n N     subscribers, spread over the ports (100); one more connection publishes\n"
        "  -s SIZE  message size, at least 16 (64; k/m suffixes)\n"
        "  -m M     latency phase: messages sent one at a time (50; 0 skips it)\n"
        "  -P K     throughput phase: messages in flight (8)\n"
        "  -w SECS  throughput warm-up (0.5)   -d SECS  throughput measured (2)\n"
        "  -u PATH  the broadcast path (/broadcast)   -H HOST  IPv4 address (127.0.0.1)\n"
        "  -c N     handshakes in flight while opening (100)\n"
        "  -S PID[,PID...]  report these processes' CPU time over the measured phases\n"
        "  -T SECS  a message not everywhere after this long is given up as lost (5)\n"
        "  -t SECS  hard deadline (default: generous, from -n, -m, -w, -d and -T)\n");
}

int main(int argc, char **argv)
{
    int ch;
    while ((ch = getopt(argc, argv, "p:n:s:m:P:w:d:u:H:c:S:T:t:h")) != -1) {
        switch (ch) {
        case 'p': opt.nports = parse_list(optarg, opt.ports, MAX_PORTS); break;
        case 'n': opt.subs = atoi(optarg); break;
        case 's': opt.size = parse_size(optarg); break;
        case 'm': opt.msgs = atoi(optarg); break;
        case 'P': opt.inflight = atoi(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'd': opt.secs = atof(optarg); break;
        case 'u': opt.path = optarg; break;
        case 'H': opt.host = optarg; break;
        case 'c': opt.concurrency = atoi(optarg); break;
        case 'S': opt.npids = parse_list(optarg, opt.pids, MAX_PIDS); break;
        case 'T': opt.msg_timeout = atof(optarg); break;
        case 't': opt.timeout = atof(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    struct in_addr probe_addr;
    int bad_port = opt.nports < 1;
    for (int i = 0; i < opt.nports; i++) bad_port |= opt.ports[i] > 65535;
    if (optind != argc || bad_port || opt.npids < 0 || opt.subs < 1 || opt.msgs < 0 ||
        opt.inflight < 1 || opt.inflight > RING / 4 || opt.concurrency < 1 || opt.size < 16 ||
        opt.size > ((size_t)1 << 30) || opt.secs <= 0 || opt.warmup < 0 ||
        opt.msg_timeout <= 0 || strlen(opt.path) > 200 || opt.path[0] != '/' ||
        inet_pton(AF_INET, opt.host, &probe_addr) != 1) {
        fprintf(stderr, "fanout: bad or missing option (-p PORT is required; -h for help)\n");
        return 2;
    }
    if (opt.timeout < 0)
        opt.timeout = 60 + 3.0 * opt.subs / 1000 + PROBE_LIMIT + opt.warmup + opt.secs +
                      opt.msgs * (0.5 + opt.subs / 10000.0) + 2 * opt.msg_timeout;
    /* One socket per connection: as many as the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.subs + 64) {
        fprintf(stderr, "fanout: the open-file limit (%llu) is below %d subscribers\n",
                (unsigned long long)rl.rlim_cur, opt.subs);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)opt.timeout + 10);  /* in case the loop itself is stuck */
    random_bytes(&rng_state, sizeof rng_state);
    rng_state |= 1;
    return run();
}
