/*
 * c_echo: the C floor for bench/run.py. A minimal single-threaded WebSocket echo server
 * (epoll, level-triggered, non-blocking): what the kernel's loopback TCP costs with next to
 * no user-space work, to put the Python servers' numbers in proportion.
 *
 *     gcc -O2 -Wall -o bench/build/c_echo bench/servers/c_echo.c
 *     bench/build/c_echo --port 9001
 *
 * It echoes frame by frame: each client frame's header goes back unmasked with the same
 * FIN and opcode as soon as it is parsed, and its payload is unmasked in the read buffer and
 * appended to the connection's output as it arrives, so a 1 MiB message is never held whole.
 * Everything one read produced goes out in one write. Pings are answered, a close frame is
 * echoed and then the server closes TCP (RFC 6455 section 7.1.1). It checks what a server must
 * (client frames masked, no RSV bits, short unfragmented control frames) and nothing else:
 * no UTF-8 validation, no size limit, no origin. Listens on 127.0.0.1 only; SIGTERM stops it.
 * SHA-1 and base64 for the handshake come from bench/loadgen.c.
 */
#define LOADGEN_CRYPTO_ONLY
#include "../loadgen.c"

#define READ_BUF (256 * 1024)
#define REQ_MAX 8192
#define OUT_HIGH (4 * 1024 * 1024)  /* stop reading while this much output waits */
#define MAX_FD 65536

enum { HTTP, WS, CLOSING };

struct cx {
    int fd, state, reading, writing;
    char *req;
    size_t req_len;
    uint8_t hdr[14];
    int hdr_have, hdr_need, in_payload, ctl_have, mask_pos;
    uint8_t op, mask[4], ctl[125];
    uint64_t left;
    uint8_t *out;
    size_t out_off, out_len, out_cap;
};

static struct cx *cxs[MAX_FD];
static int epfd;
static uint8_t *inbuf;
static volatile sig_atomic_t stopping;

static void on_term(int sig) { (void)sig; stopping = 1; }

static void set_events(struct cx *c)
{
    struct epoll_event ev = {.events = (c->reading ? EPOLLIN : 0) | (c->writing ? EPOLLOUT : 0),
                             .data.fd = c->fd};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void drop(struct cx *c)
{
    close(c->fd);
    cxs[c->fd] = NULL;
    free(c->req);
    free(c->out);
    free(c);
}

static void out_append(struct cx *c, const void *p, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        if (c->out_off > 0) {  /* slide what is left to the front first */
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap < c->out_len + n) cap *= 2;
            uint8_t *grown = realloc(c->out, cap);
            if (!grown) { perror("realloc"); exit(1); }
            c->out = grown;
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void frame_header(struct cx *c, uint8_t b0, uint64_t len)
{
    uint8_t h[10];
    size_t n = 0;
    h[n++] = b0;
    if (len < 126) {
        h[n++] = (uint8_t)len;
    } else if (len < 65536) {
        h[n++] = 126;
        h[n++] = len >> 8; h[n++] = (uint8_t)len;
    } else {
        h[n++] = 127;
        for (int i = 7; i >= 0; i--) h[n++] = (uint8_t)(len >> (8 * i));
    }
    out_append(c, h, n);
}

/* Write what is queued. Returns -1 when the connection is gone. */
static int flush_out(struct cx *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            drop(c);
            return -1;
        }
        c->out_off += (size_t)w;
    }
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        free(c->out);  /* an idle connection holds no buffer */
        c->out = NULL;
        c->out_cap = 0;
        if (c->state == CLOSING) {  /* our close frame is out: the server closes TCP first */
            drop(c);
            return -1;
        }
    }
    size_t pending = c->out_len - c->out_off;
    int writing = pending > 0, reading = c->state != CLOSING && pending < OUT_HIGH;
    if (writing != c->writing || reading != c->reading) {
        c->writing = writing;
        c->reading = reading;
        set_events(c);
    }
    return 0;
}

static void fail(struct cx *c, uint16_t code)
{
    uint8_t body[2] = {code >> 8, code & 0xff};
    frame_header(c, 0x88, 2);
    out_append(c, body, 2);
    c->state = CLOSING;
}

static void unmask(struct cx *c, uint8_t *p, size_t n)
{
    size_t i = 0;
    if (n >= 16) {
        uint8_t m8[8];
        for (int k = 0; k < 8; k++) m8[k] = c->mask[(c->mask_pos + k) & 3];
        uint64_t m;
        memcpy(&m, m8, 8);
        for (; i + 8 <= n; i += 8) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            v ^= m;
            memcpy(p + i, &v, 8);
        }
    }
    for (; i < n; i++) p[i] ^= c->mask[(c->mask_pos + i) & 3];
    c->mask_pos = (int)((c->mask_pos + n) & 3);
}

/* Client frames (RFC 6455 section 5.2), echoed as they arrive. */
static void on_frames(struct cx *c, uint8_t *p, size_t n)
{
    while (n > 0 && c->state == WS) {
        if (!c->in_payload) {
            if (c->hdr_have < 2) c->hdr_need = 2;
            while (c->hdr_have < c->hdr_need && n > 0) {
                c->hdr[c->hdr_have++] = *p++;
                n--;
                if (c->hdr_have == 2) {
                    uint8_t l7 = c->hdr[1] & 0x7f;
                    c->hdr_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + 4;
                }
            }
            if (c->hdr_have < c->hdr_need) return;
            uint8_t b0 = c->hdr[0], l7 = c->hdr[1] & 0x7f;
            uint64_t len = l7;
            int at = 2;
            if (l7 == 126) { len = (uint64_t)c->hdr[2] << 8 | c->hdr[3]; at = 4; }
            if (l7 == 127) {
                len = 0;
                for (int i = 0; i < 8; i++) len = len << 8 | c->hdr[2 + i];
                at = 10;
            }
            c->hdr_have = 0;
            c->op = b0 & 0x0f;
            if (!(c->hdr[1] & 0x80) || (b0 & 0x70)) { fail(c, 1002); return; }  /* 5.1, 5.2 */
            if (c->op >= 8 && (!(b0 & 0x80) || len > 125)) { fail(c, 1002); return; }  /* 5.5 */
            memcpy(c->mask, c->hdr + at, 4);
            c->mask_pos = 0;
            c->left = len;
            c->ctl_have = 0;
            c->in_payload = 1;
            if (c->op < 8) frame_header(c, b0, len);  /* data: echo the header right away */
        }
        size_t k = c->left < n ? (size_t)c->left : n;
        unmask(c, p, k);
        if (c->op < 8) {
            out_append(c, p, k);
        } else {
            memcpy(c->ctl + c->ctl_have, p, k);
            c->ctl_have += (int)k;
        }
        p += k;
        n -= k;
        c->left -= k;
        if (c->left > 0) return;
        c->in_payload = 0;
        if (c->op == 9) {  /* ping: pong with its data */
            frame_header(c, 0x8A, (uint64_t)c->ctl_have);
            out_append(c, c->ctl, (size_t)c->ctl_have);
        } else if (c->op == 8) {  /* close: echo the status code, then end */
            frame_header(c, 0x88, c->ctl_have >= 2 ? 2 : 0);
            out_append(c, c->ctl, c->ctl_have >= 2 ? 2 : 0);
            c->state = CLOSING;
        }
    }
}

static void on_request(struct cx *c, const uint8_t *p, size_t n)
{
    if (!c->req && !(c->req = malloc(REQ_MAX + 1))) { perror("malloc"); exit(1); }
    size_t take = n < REQ_MAX - c->req_len ? n : REQ_MAX - c->req_len;
    memcpy(c->req + c->req_len, p, take);
    c->req_len += take;
    c->req[c->req_len] = 0;
    char *end = strstr(c->req, "\r\n\r\n");
    if (!end) {
        if (c->req_len == REQ_MAX) { drop(c); }
        return;
    }
    char *key = NULL;
    size_t key_len = 0;
    for (char *line = strstr(c->req, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "sec-websocket-key:", 18) == 0) {
            key = line + 20;
            while (*key == ' ') key++;
            key_len = strcspn(key, " \r");
        }
    }
    if (strncmp(c->req, "GET / HTTP/1.1\r\n", 16) != 0 || key_len != 24) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";
        out_append(c, bad, sizeof bad - 1);
        c->state = CLOSING;
        return;
    }
    key[24] = 0;
    char accept[29], resp[160];
    accept_for(key, accept);
    int len = snprintf(resp, sizeof resp,
                       "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    out_append(c, resp, (size_t)len);
    size_t head = (size_t)(end + 4 - c->req), rest = c->req_len - head;
    c->state = WS;
    if (rest > 0) {  /* frames sent right behind the request */
        uint8_t *tmp = malloc(rest);
        memcpy(tmp, c->req + head, rest);
        free(c->req);
        c->req = NULL;
        on_frames(c, tmp, rest);
        free(tmp);
    } else {
        free(c->req);
        c->req = NULL;
    }
}

static void on_readable(struct cx *c)
{
    ssize_t n = read(c->fd, inbuf, READ_BUF);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) { drop(c); return; }
    if (n < 0) return;
    if (c->state == HTTP) {
        on_request(c, inbuf, (size_t)n);
        if (cxs[c->fd] != c) return;
    } else if (c->state == WS) {
        on_frames(c, inbuf, (size_t)n);
    }
    flush_out(c);
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;  /* EAGAIN, or out of descriptors: try again on the next event */
        if (fd >= MAX_FD) { close(fd); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct cx *c = calloc(1, sizeof *c);
        if (!c) { close(fd); continue; }
        c->fd = fd;
        c->reading = 1;
        cxs[fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    }
}

int main(int argc, char **argv)
{
    int port = -1;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    if (port < 0 || port > 65535) {
        fprintf(stderr, "usage: c_echo --port PORT\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) {
        perror("c_echo: bind/listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    inbuf = malloc(READ_BUF);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[256];
    while (!stopping) {
        int n = epoll_wait(epfd, evs, 256, 200);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) { on_accept(lfd); continue; }
            struct cx *c = cxs[fd];
            if (!c) continue;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                on_readable(c);
                if (cxs[fd] != c) continue;
            }
            if (evs[i].events & EPOLLOUT) flush_out(c);
        }
    }
    return 0;
}
